"""Teleop episode recording without ROS: start, add sampled frames, stop (save) or discard.

    rec = EpisodeRecorder(root, fps=10, mapping=TwistActionMap(...))
    rec.start(current_instruction)                      # -> message; refused when the instruction is too long
    rec.add_frame(t, rgb, action, "pick up the cube")   # at the sampling rate, while recording
    rec.stop(success=True)                              # -> (episode index, message); atomic write
    rec.discard()

Episodes are written with lapa_learning.data.EpisodeWriter in append mode: each lands atomically, so a crash
(SIGINT, SIGKILL, power loss) during an episode loses only that episode. A failed write (full disk, a folder
that became unwritable) raises RecordingError with the writer's message; earlier episodes stay intact, and the
episode's frames are kept: stop() again retries the write, discard() drops them.

The dataset root is checked when the recorder is made (ConfigError, before any demonstration): it is created if
missing; a file, an uncreatable or unwritable folder, a non-empty folder that is not an episode dataset, and a
dataset whose fps, video_key, action_names or image size differ from the recorder's are refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from lapa_learning.data.sync import TwistActionMap
from lapa_learning.errors import ConfigError, LapaError
from lapa_ros.safety import too_long


class RecordingError(LapaError):
    """A recording request that cannot be done now (with the reason)."""


class EpisodeRecorder:
    def __init__(self, root: str | os.PathLike, fps: float, mapping: TwistActionMap,
                 image_size: tuple[int, int] = (0, 0), video_key: str = "observation.images.front",
                 max_frames: int = 100_000, min_frames: int = 2, robot_type: str = "ros",
                 max_instruction_chars: int = 300):
        self.root = Path(root)
        self.fps = float(fps)
        self.mapping = mapping
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.video_key = video_key
        self.max_frames, self.min_frames = int(max_frames), max(2, int(min_frames))
        self.robot_type = robot_type
        self.max_instruction_chars = int(max_instruction_chars)
        self._writer = None
        self.recording = False
        self.instruction: str | None = None
        self._frames: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []
        self._times: list[float] = []
        self.saved = 0  # episodes written by this recorder
        self.discarded = 0
        self.unsaved = False  # stopped, but the write failed: the frames wait for stop() (retry) or discard()
        self.dataset_size: tuple[int, int] | None = None  # (h, w) of an existing dataset's video
        self.check_root()

    # ------------------------------------------------------------------ episode control
    def start(self, instruction: str | None = None) -> str:
        """Begin an episode. `instruction`, the one in force now (if any), must fit max_instruction_chars."""
        if self.recording:
            raise RecordingError(f"already recording an episode ({len(self._frames)} frames); stop or discard it")
        if self.unsaved:
            raise RecordingError(f"not starting: the last episode ({len(self._frames)} frames) could not be "
                                 f"written; stop again to retry writing it, or discard it")
        if instruction is not None and too_long(instruction, self.max_instruction_chars):
            raise RecordingError(f"not starting: {too_long(instruction, self.max_instruction_chars)}")
        self._clear()
        self.recording = True
        return f"recording episode {self.next_index()}"

    def add_frame(self, t: float, rgb: np.ndarray, action: np.ndarray, instruction: str | None) -> bool:
        """Append one sampled frame; returns False when the episode reached max_frames (the caller stops it).

        The episode's instruction is the one in force at its first frame (so an episode can be started before
        the task is set, as a script that starts the recorder and then resets the robot does).
        """
        if not self.recording or len(self._frames) >= self.max_frames:
            return False
        if not self._frames:
            if instruction is None or not instruction.strip():
                raise RecordingError("no instruction yet: publish the task on the instruction topic")
            if too_long(instruction, self.max_instruction_chars):
                raise RecordingError(f"frame skipped: {too_long(instruction, self.max_instruction_chars)}")
            self.instruction = instruction
        self._frames.append(self._fit(rgb))
        self._actions.append(np.asarray(action, dtype=np.float32))
        self._times.append(float(t))
        return len(self._frames) < self.max_frames

    @property
    def num_frames(self) -> int:
        return len(self._frames)

    def stop(self, success: bool | None) -> tuple[int, str]:
        """Write the episode (blocking, atomic); returns (episode index, message).

        If the write fails, the frames are kept (RecordingError says so): stop() again retries, discard() drops.
        """
        if not (self.recording or self.unsaved):
            raise RecordingError("not recording (call start first)")
        frames, actions, times = self._frames, self._actions, self._times
        instruction = self.instruction
        self.recording = False
        if len(frames) < self.min_frames:
            self._clear()
            self.discarded += 1
            raise RecordingError(f"episode discarded: only {len(frames)} frame(s) were sampled (need "
                                 f"{self.min_frames}); are the camera, teleop and instruction topics publishing?")
        timestamps = np.asarray(times, dtype=np.float64)
        # Sample times are strictly increasing by construction; guard anyway against a clock jumping back.
        if np.any(np.diff(timestamps) <= 0):
            timestamps = np.arange(len(frames), dtype=np.float64) / self.fps
        try:
            writer = self._open_writer(frames[0].shape[:2])
            index = writer.add_episode(np.stack(frames), instruction, actions=np.stack(actions),
                                       success=success, timestamps=timestamps)
        except (LapaError, OSError, ValueError) as err:  # the writer says which episode and why (full disk)
            self.unsaved = True
            raise RecordingError(f"{err}; the episode's {len(frames)} frames are kept: stop again to retry "
                                 f"writing them, or discard them") from err
        self.unsaved = False
        self._clear()
        self.saved += 1
        return index, f"saved episode {index} ({len(frames)} frames, success={success}) to {self.root}"

    def discard(self) -> str:
        if not (self.recording or self.unsaved):
            raise RecordingError("not recording: nothing to discard")
        n = len(self._frames)
        self.recording = self.unsaved = False
        self._clear()
        self.discarded += 1
        return f"discarded the episode being recorded ({n} frames)"

    def next_index(self) -> int:
        return self._writer.num_episodes if self._writer is not None else _existing_episodes(self.root)

    def close(self) -> str | None:
        """Drop an unfinished episode and write the dataset statistics; returns a message for the log."""
        msg = None
        if self.recording or self.unsaved:
            what = "unfinished" if self.recording else "unwritten"
            msg = f"shutting down: the {what} episode ({len(self._frames)} frames) was not saved"
            self.recording = self.unsaved = False
            self._clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return msg

    def check_root(self) -> None:
        """Create the dataset root, or check that episodes can be appended to it; ConfigError otherwise."""
        root = self.root
        where = f"parameter dataset_root: {root}"
        if root.exists() and not root.is_dir():
            raise ConfigError(f"{where} is a file, not a folder; name a folder for the episode dataset")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"{where} cannot be created: {err.strerror or err}") from None
        if not os.access(root, os.W_OK | os.X_OK):
            raise ConfigError(f"{where} is not writable by this user")
        if not (root / "meta" / "info.json").is_file():
            if any(root.iterdir()):
                raise ConfigError(f"{where} is not empty and holds no episode dataset (no meta/info.json); "
                                  f"name a new or empty folder, or an episode dataset to append to")
            return
        from lapa_learning.data.reader import EpisodeDataset

        try:
            ds = EpisodeDataset(root)
        except LapaError as err:
            raise ConfigError(f"{where}: cannot append to it: {err}") from None
        from lapa_learning.data.writer import append_mismatches

        h, w = self.image_size
        scales = self.mapping.scales()
        mismatches = []
        for name, have, want in append_mismatches(
                ds, fps=self.fps, image_size=(h, w) if h and w else None, video_key=self.video_key,
                with_actions=True, action_names=self.mapping.action_names, state_names=(), action_scales=scales):
            if name == "action_scales":  # name the node parameters that differ
                mismatches += [f"{key} is {have.get(key, 'not recorded')!r} in the dataset but "
                               f"{want.get(key, 'not recorded')!r} here"
                               for key in sorted(set(have) | set(want)) if have.get(key) != want.get(key)]
            elif name == "with_actions":
                mismatches.append("it holds no actions (an action-free video set)")
            elif name == "state_names":
                mismatches.append(f"its episodes have states {list(have)}, which the recorder does not record")
            else:
                show = list if isinstance(have, tuple) else (lambda v: v)
                mismatches.append(f"{name} is {show(have)!r} in the dataset but {show(want)!r} here")
        if ds.layout != "v2.1":
            mismatches.append(f"it is a LeRobot {ds.layout} dataset (read-only here)")
        if mismatches:
            raise ConfigError(f"{where} holds a dataset that these parameters cannot append to: "
                              f"{'; '.join(mismatches)}. Set the parameters to the dataset's values, or name "
                              f"another dataset_root")
        self.dataset_size = tuple(ds.image_size)

    # ------------------------------------------------------------------ internals
    def _fit(self, rgb: np.ndarray) -> np.ndarray:
        h, w = self.image_size
        if not (h and w) and self.dataset_size is not None:  # "the camera's size", appending: the dataset's
            h, w = self.dataset_size
        if h and w and rgb.shape[:2] != (h, w):
            return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        if self._frames and rgb.shape != self._frames[0].shape:  # camera changed size mid-episode
            fh, fw = self._frames[0].shape[:2]
            return cv2.resize(rgb, (fw, fh), interpolation=cv2.INTER_AREA)
        return rgb

    def _open_writer(self, size: tuple[int, int]):
        if self._writer is None:
            from lapa_learning.data.writer import EpisodeWriter

            exists = (self.root / "meta" / "info.json").is_file()
            if not exists and self.root.is_dir() and any(self.root.iterdir()):  # files came after start-up
                raise RecordingError(f"{self.root} is no longer empty and holds no episode dataset "
                                     f"(no meta/info.json): move those files away")
            self._writer = EpisodeWriter(self.root, fps=self.fps, image_size=tuple(size), video_key=self.video_key,
                                         action_names=self.mapping.action_names, robot_type=self.robot_type,
                                         mode="append" if exists else "create", action_scales=self.mapping.scales())
        return self._writer

    def _clear(self) -> None:
        self._frames, self._actions, self._times = [], [], []


def _existing_episodes(root: Path) -> int:
    path = root / "meta" / "episodes.jsonl"
    if not path.is_file():
        return 0
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())
