"""episode_runner: drive sim_node through N episodes, optionally recording each with recorder_node.

    episode_runner --ros-args -p episodes:=5 -p record:=true

For each episode: ~/start the recorder, ~/reset the simulator (new layout, instruction published), wait until the simulator reports the episode done (success or step limit), then ~/stop the
recorder with the success flag. This is what an operator does by hand with `ros2 service call` at a real arm.
Prints one line per episode and a summary; exit code 1 if an episode timed out or a service failed, 2 for a bad
parameter, 128 + the signal after Ctrl-C (130) or SIGTERM (143). Service names are relative (`sim_node/reset`),
so `-r __ns:=/arm1` reaches /arm1/sim_node.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from std_srvs.srv import SetBool, Trigger

from lapa_ros import qos
from lapa_learning.errors import ConfigError, LapaError
from lapa_ros.params import _p, _positive, declare_and_read
from lapa_ros.runtime import exit_now, prepare_environment


@dataclass(frozen=True)
class RunnerParams:
    episodes: int = _p(3, "number of episodes to run")
    record: bool = _p(False, "start/stop recorder_node around each episode")
    sim_node: str = _p("sim_node", "name of the simulator node (its ~/reset and sim/status are used)")
    recorder_node: str = _p("recorder_node", "name of the recorder node (its ~/start and ~/stop are used)")
    episode_timeout: float = _p(120.0, "s of wall time an episode may take")

    def __post_init__(self):
        if self.episodes < 1:
            raise ConfigError(f"parameter episodes must be >= 1, got {self.episodes}")
        _positive(self, "episode_timeout")
        for name in ("sim_node", "recorder_node"):
            if not getattr(self, name).strip("/"):
                raise ConfigError(f"parameter {name} must name a node, got {getattr(self, name)!r}")


@dataclass
class EpisodeResult:
    episode: int
    task: str
    success: bool
    steps: int
    message: str


class EpisodeRunner(Node):
    def __init__(self, **node_kwargs):
        super().__init__("episode_runner", **node_kwargs)
        try:
            self.params = p = declare_and_read(self, RunnerParams)
        except BaseException:
            self.destroy_node()  # a refused parameter: the half-built node goes now, before the context (see main)
            raise
        self.status: dict[str, str] = {}
        self.create_subscription(DiagnosticArray, "sim/status", self.status_callback, qos.status())
        # Relative names: under `-r __ns:=/arm1` they are /arm1/sim_node/reset etc. (an absolute name is used as is)
        self.reset_client = self.create_client(Trigger, f"{p.sim_node}/reset")
        self.start_client = self.create_client(Trigger, f"{p.recorder_node}/start")
        self.stop_client = self.create_client(SetBool, f"{p.recorder_node}/stop")

    def status_callback(self, msg: DiagnosticArray) -> None:
        if msg.status:
            self.status = {kv.key: kv.value for kv in msg.status[0].values}

    # ------------------------------------------------------------------ helpers
    def _spin_until(self, predicate, timeout: float) -> bool:
        import rclpy

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            rclpy.spin_once(self, timeout_sec=0.05)
        return predicate()

    def _call(self, client, request, timeout: float = 30.0):
        import rclpy

        name = self.resolve_service_name(client.srv_name)  # /arm1/sim_node/reset under a namespace
        if not client.wait_for_service(timeout_sec=min(2.0, timeout)):  # discovery takes a moment even when it is up
            print(f"episode_runner: waiting up to {timeout:g} s for service {name}", flush=True)
            if not client.wait_for_service(timeout_sec=timeout):
                raise RuntimeError(f"service {name} is not available")
        future = client.call_async(request)
        rclpy.spin_until_future_complete(self, future, timeout_sec=timeout)
        if not future.done():
            raise RuntimeError(f"service {name} did not answer in {timeout} s")
        return future.result()

    # ------------------------------------------------------------------ episodes
    def run_episode(self) -> EpisodeResult:
        p = self.params
        if p.record:  # recorder first, so that it has the episode from its first frame
            reply = self._call(self.start_client, Trigger.Request())
            if not reply.success:
                raise RuntimeError(f"recorder start failed: {reply.message}")
        reply = self._call(self.reset_client, Trigger.Request())
        if not reply.success:
            raise RuntimeError(f"sim reset failed: {reply.message}")
        episode = int(reply.message.split(":")[0].split()[-1])  # "episode 3: task seed 7: instruction"
        done = self._spin_until(lambda: self.status.get("episode") == str(episode)
                                and self.status.get("done") == "True", p.episode_timeout)
        success = done and self.status.get("success") == "True"
        message = reply.message if p.record else ""
        if p.record:
            stop = self._call(self.stop_client, SetBool.Request(data=bool(success)))
            message = stop.message
            if not stop.success:
                raise RuntimeError(f"recorder stop failed: {stop.message}")
        if not done:
            raise RuntimeError(f"episode {episode} did not finish in {p.episode_timeout} s")
        return EpisodeResult(episode, self.status.get("task", ""), success, int(self.status.get("step", -1)),
                             message)


def main(args=None, exit_process: bool = True) -> int:
    """Run the episodes, then end the process with their exit code through runtime.exit_now, as every node does.

    Exit -11 after a clean one-line parameter error was seen twice in CI (not reproduced here, even under load).
    Two things set this process apart from the nodes, which never showed it, and both are gone: rclpy's own
    signal handlers (and their deferred-handler thread) are not installed, and a node whose parameters are
    refused is destroyed at once, before the context is shut down (it was freed after the shutdown, with the
    error's traceback).
    A crash would now also print every thread's Python stack (runtime.prepare_environment enables faulthandler).
    """
    code = _run(args)
    if exit_process:
        exit_now(code)
    return code


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(signum)


def _run(args) -> int:
    prepare_environment()
    # Ctrl-C and SIGTERM raise KeyboardInterrupt in the episode loop (Python's handlers, not rclpy's): the loop
    # ends, the episodes so far are summed up, exit code 128 + the signal number.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run_episodes(args)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_episodes(args) -> int:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = EpisodeRunner()
    except LapaError as err:  # a bad parameter: one line, exit code 2 (as the other nodes, runtime.run_node)
        print(f"episode_runner: error: {err}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 2
    code, results = 0, []
    try:
        for _ in range(node.params.episodes):
            result = node.run_episode()
            results.append(result)
            print(f"episode {result.episode} {result.task}: success={result.success} steps={result.steps} "
                  f"{result.message}", flush=True)
    except RuntimeError as err:
        print(f"episode_runner: error: {err}", flush=True)
        code = 1
    except KeyboardInterrupt as err:
        code = 128 + (err.args[0] if err.args else signal.SIGINT)
    finally:
        if results:
            print(f"{sum(r.success for r in results)}/{len(results)} episodes succeeded", flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
