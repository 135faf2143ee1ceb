"""Environment seeds: training data and evaluation draw from disjoint sets, so evaluation layouts are unseen.

Data generation uses even seeds, evaluation odd ones, for any user-chosen base seed.
"""


def train_seed(base_seed: int, episode: int) -> int:
    return 2 * (int(base_seed) * 100_000 + int(episode))


def eval_seed(base_seed: int, episode: int) -> int:
    return 2 * (int(base_seed) * 100_000 + int(episode)) + 1
