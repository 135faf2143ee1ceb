"""What the CLI tests share: a `lapa` command that must be refused with one clear line."""

from lapa_learning.cli import main


def refused(capsys, argv, *words) -> str:
    """main(argv) exits with 2 and one `lapa: error:` line naming `words`, no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("lapa: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]
