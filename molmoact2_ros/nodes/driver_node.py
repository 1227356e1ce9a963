"""Driver node: executes action chunks on one robot through the safety stack, at the embodiment's tick rate.

A lifecycle node (``molmoact2_driver``). configure = load the embodiment and connect the hardware;
activate = start (or resume) the control loop; deactivate = hold position; cleanup/shutdown = stop the
loop, hold, disconnect. With ``autostart`` (default) it configures and activates itself, like Nav2's
lifecycle manager, because the pip install has no ``ros2 lifecycle`` CLI.

The control loop runs on its own thread with absolute deadlines (``time.perf_counter``), never on an
executor timer: a busy executor (chunk deserialisation, services, diagnostics) must not stretch the
control period. Like ros2_control's controller manager, the thread asks for SCHED_FIFO
(``control_thread_priority``, where the OS allows it) so a policy running on the same PC cannot delay
its wake-ups. The executor thread in ``main`` gets the priority just below: it is the only other thread
that holds the GIL, and a GIL holder preempted by other processes stalls the control thread for a
whole scheduler slice (priority inversion); ``main`` also shortens the GIL switch interval so the
control thread never waits 5 ms for it (benchmarks/results/driver.md has the measurements).

Every tick runs ``core.safety.DriverCore.cycle``: read the hardware, ``SafetyStack.tick`` (scheduler ->
clamp -> rate limit -> startup guard), write; then it publishes ``/joint_states`` (measured) and
``~/commanded`` (what was actually written; ``~/shadow_commanded`` in shadow mode, where nothing is
written). All the logic is in ``core.safety`` / ``core.scheduler``; this module translates messages
and owns threads and ROS entities.

Safety inputs: ``~/estop`` (Trigger) and ``/estop`` (Bool, true trips; any publisher reliability) latch
the e-stop; ``~/reset`` clears an e-stop or fault once the arm has braked to a stop, after which motion
restarts from the measured pose through the startup guard; ``~/enable`` (SetBool) leaves (true) or
re-enters (false) shadow mode, the default for every backend but mock/mujoco. These four live on a small
companion node (``<name>_safety``) with an executor thread of its own, so an e-stop never waits behind a
large chunk being deserialised on the main executor; the services keep the driver's names
(``/molmoact2_driver/estop``, ...). Faults hold or relax per ``safety.fault_action`` (hold where the backend
cannot relax). A backend that reads the robot's own ``/joint_states`` (``ros_topic``) gets this node's
handle, and the driver then leaves ``/joint_states`` to the robot instead of republishing it.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import deque
from typing import Any

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy._rclpy_pybind11 import InvalidHandle, RCLError
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from molmoact2_ros.backends.hardware import HardwareInterface, make_hardware
from molmoact2_ros.core.chunk_validation import REJECT_TOO_LONG
from molmoact2_ros.core.driver_core import DriverCore
from molmoact2_ros.core.embodiment import EmbodimentConfig, SafetyConfig, load_embodiment
from molmoact2_ros.core.errors import ChunkRejected, ConfigError, HardwareError
from molmoact2_ros.core.safety import SafetyStack, SafetyState
from molmoact2_ros.nodes.chunk_cdr import decode_chunk
from molmoact2_ros.nodes.contract import trajectory_to_chunk
from molmoact2_ros.nodes.deferred_log import DeferredLog
from molmoact2_ros.nodes.diagnostics import ERROR, OK, WARN, DiagnosticsPublisher, percentiles_ms
from molmoact2_ros.nodes.param_check import check_parameter_overrides
from molmoact2_ros.nodes.qos import CHUNK_QOS, CHUNK_TOPIC, ESTOP_TOPIC, JOINT_STATE_QOS, JOINT_STATES_TOPIC
from molmoact2_ros.nodes.runtime_env import spin_node
from molmoact2_ros.realtime import set_thread_fifo

NODE_NAME = "molmoact2_driver"
# Backends that only simulate motion: never shadowed by default, whatever the YAML says.
SIMULATED_BACKENDS = ("mock", "mujoco")
PERIOD_ERROR_WINDOW = 3000  # default ticks kept for the period-error percentiles (100 s at 30 Hz)
# CPython hands the GIL to a waiting thread after this long (default 5 ms): a control tick that wakes
# while the executor thread runs a callback would wait that long. 0.5 ms keeps the wait under a tick.
GIL_SWITCH_INTERVAL_S = 0.0005
DEFAULT_CONTROL_THREAD_PRIORITY = 50  # ros2_control's default real-time priority for its update loop
# /estop: best effort matches every publisher (a reliable subscription would not hear a best-effort
# button node); depth 10 so a burst is not lost behind itself.
ESTOP_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)
# At shutdown the loop keeps running until the arm has braked to a stop, at most this long past the
# slowest joint's own stopping time.
SHUTDOWN_BRAKE_MARGIN_S = 0.5


# Safety limits a parameter (a params file) may set as ``safety.<field>``: every float limit of the embodiment's
# safety section, for each of which a smaller value is stricter. 0.0 (the default) keeps the embodiment's value.
TIGHTEN_ONLY_SAFETY = tuple(name for name, f in SafetyConfig.model_fields.items() if f.annotation is float)


def tightened_embodiment(emb: EmbodimentConfig, overrides: dict[str, float]) -> EmbodimentConfig:
    """``emb`` with the safety limits in ``overrides`` (0 = unset) applied; a value looser than the
    embodiment's (larger) is refused with a ConfigError naming it: parameters may only tighten limits."""
    chosen = {k: float(v) for k, v in overrides.items() if v}
    for name, value in chosen.items():
        current = float(getattr(emb.safety, name))
        if value > current:
            raise ConfigError(f"parameter safety.{name}={value:g} loosens {emb.name}'s limit {current:g}: parameters "
                              f"may only tighten safety limits (use <= {current:g}, or edit the embodiment YAML)")
        if value < 0:
            raise ConfigError(f"parameter safety.{name}={value:g} must be > 0 (0 keeps the embodiment's)")
    if not chosen:
        return emb
    try:
        safety = SafetyConfig.model_validate({**emb.safety.model_dump(), **chosen})
    except ValueError as exc:
        raise ConfigError(f"safety parameters {chosen}: {str(exc).splitlines()[-1].strip()}") from None
    return emb.model_copy(update={"safety": safety})


class DriverNode(LifecycleNode):
    """Chunk scheduler + safety stack + hardware backend behind the message contract."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self._declare_parameters()
        self.embodiment: EmbodimentConfig | None = None
        self.hardware: HardwareInterface | None = None
        self.stack: SafetyStack | None = None
        self.core: DriverCore | None = None
        self._publish_joint_states = True
        self._publishers_owned: list[Any] = []
        self._subscriptions_owned: list[Any] = []
        self._services_owned: list[Any] = []
        self._safety_node: Node | None = None
        self._safety_executor: SingleThreadedExecutor | None = None
        self._safety_thread: threading.Thread | None = None
        self._loop_thread: threading.Thread | None = None
        self._stop_loop = threading.Event()
        self._hw_lock = threading.Lock()  # hardware calls from the loop vs. release at shutdown
        self._stats_lock = threading.Lock()
        window = int(self._param("period_error_window_ticks"))
        self._period_errors_s: deque[float] = deque(maxlen=window)
        self._lateness_s: deque[float] = deque(maxlen=window)  # tick start - its deadline
        self._tick_durations_s: deque[float] = deque(maxlen=window)
        self._overruns = 0
        self._tick_exceptions = 0
        self._realtime = False
        self._last_state: SafetyState | None = None
        self._error_limit = int(self._param("hardware_error_limit"))
        decode = str(self._param("chunk_decode"))
        if decode not in ("cdr", "message"):
            raise ValueError(f"chunk_decode must be 'cdr' or 'message', not {decode!r}")
        self._raw_chunks = decode == "cdr"
        self._configure_error = ""
        self._lifecycle = "unconfigured"
        self._diagnostics = DiagnosticsPublisher(
            self, self._diagnostics_snapshot, period_s=self._param("diagnostics_period_s"),
            hardware_id=NODE_NAME,
        )
        # Hot threads (control loop / inference) log through this, never the rclpy logger directly.
        self._log_later = DeferredLog(self).later
        if self._param("autostart") and self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # ---- parameters ---------------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        def desc(text: str) -> ParameterDescriptor:
            return ParameterDescriptor(description=text)

        self.declare_parameter("embodiment", "so101", desc("built-in embodiment name or a YAML file path"))
        self.declare_parameter("backend", "", desc("hardware backend; empty: the embodiment's backend"))
        self.declare_parameter("emulate_hardware", False, desc(
            "run a real arm family's backend (feetech, i2rt, franka) against its emulated device in this "
            "process: the real hardware library, no physical robot"))
        self.declare_parameter("autostart", True, desc("configure + activate at startup (no lifecycle CLI)"))
        self.declare_parameter(
            "shadow_mode", Parameter.Type.BOOL,
            desc("compute everything, write nothing; unset: the embodiment's hardware.shadow_mode_default "
                 "(never for the mock/mujoco backends)"),
        )
        self.declare_parameter("diagnostics_period_s", 1.0, ParameterDescriptor(
            description="seconds between /diagnostics messages",
            floating_point_range=[FloatingPointRange(from_value=0.01, to_value=60.0)]))
        self.declare_parameter("hardware_error_limit", 3, ParameterDescriptor(
            description="consecutive hardware read or write failures before the driver latches a fault",
            integer_range=[IntegerRange(from_value=1, to_value=1000)]))
        self.declare_parameter("control_thread_priority", DEFAULT_CONTROL_THREAD_PRIORITY, ParameterDescriptor(
            description="SCHED_FIFO priority of the control thread (1-99; 0: normal scheduling). Needs "
                        "CAP_SYS_NICE or an rtprio limit; without it the driver warns and runs unprivileged",
            integer_range=[IntegerRange(from_value=0, to_value=99)]))
        self.declare_parameter("period_error_window_ticks", PERIOD_ERROR_WINDOW, ParameterDescriptor(
            description="ticks over which /diagnostics reports the period error and tick duration percentiles",
            integer_range=[IntegerRange(from_value=10, to_value=1_000_000)]))
        self.declare_parameter("chunk_decode", "cdr", ParameterDescriptor(
            description="cdr: decode chunks from their serialized bytes, refusing ones longer than "
                        "chunk.max_steps before reading their points (default); message: rclpy deserialisation "
                        "(slower, holds the GIL per point; kept for comparison, benchmarks/bench_tick_gap.py)",
            read_only=True))
        self.declare_parameter("hardware_ready_timeout_s", 5.0, ParameterDescriptor(
            description="a connected backend with no measurement yet (a ROS robot's first joint states) "
                        "for this long latches a hardware_not_ready fault",
            floating_point_range=[FloatingPointRange(from_value=0.1, to_value=600.0)]))
        for name in TIGHTEN_ONLY_SAFETY:
            self.declare_parameter(f"safety.{name}", 0.0, desc(
                f"tighter safety.{name} than the embodiment's (only lower values are accepted); 0: the embodiment's"))
        # A mistyped override (safety.chunk_max_agee_s) would leave the limit at the embodiment's: refuse it.
        check_parameter_overrides(self)

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _resolve_shadow(self, emb: EmbodimentConfig, backend: str) -> bool:
        p = self.get_parameter_or("shadow_mode", None)
        if p is not None and p.type_ != Parameter.Type.NOT_SET:
            return bool(p.value)
        return False if backend in SIMULATED_BACKENDS else emb.hardware.shadow_mode_default

    # ---- lifecycle ----------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        embodiment_arg = str(self._param("embodiment"))
        try:
            emb = tightened_embodiment(load_embodiment(embodiment_arg),
                                       {n: self._param(f"safety.{n}") for n in TIGHTEN_ONLY_SAFETY})
            backend = str(self._param("backend")) or emb.hardware.backend
            emulate = bool(self._param("emulate_hardware"))
            hw = make_hardware(emb, backend, ros_node=self, emulate=emulate)
            hw.connect()
        except (ConfigError, HardwareError) as exc:
            self._configure_error = str(exc)
            log.error(f"configure failed for embodiment {embodiment_arg!r}: {exc}")
            return TransitionCallbackReturn.FAILURE
        shadow = self._resolve_shadow(emb, backend)
        fault_action = emb.safety.fault_action
        if fault_action == "relax" and not hw.supports_relax:
            log.warning(f"safety.fault_action is relax but the {backend} backend cannot relax: faults hold")
            fault_action = "hold"
        self.embodiment, self.hardware = emb, hw
        self.stack = SafetyStack(emb, max_temperature_c=hw.max_temperature_c, fault_action=fault_action,
                                 shadow=shadow, heartbeat=hw.needs_heartbeat)
        self.core = DriverCore(
            self.stack, hw, error_limit=self._error_limit,
            ready_timeout_ticks=max(1, round(self._param("hardware_ready_timeout_s") * emb.tick_rate_hz)))
        # The robot's own broadcaster already publishes /joint_states: a second publisher would feed the
        # backend its own echo.
        self._publish_joint_states = hw.state_topic != self.resolve_topic_name(JOINT_STATES_TOPIC)
        self._configure_error = ""
        self._create_entities()
        self._lifecycle = "inactive"
        shadow_note = ", SHADOW MODE (writes nothing; ~/enable true to move)" if shadow else ""
        shadow_note += ", heartbeat every tick" if hw.needs_heartbeat else ""
        log.info(
            f"configured {emb.name} ({emb.dof} joints, {emb.tick_rate_hz:g} Hz ticks, chunk steps at "
            f"{emb.control_rate_hz:g} Hz) on backend {backend!r}{' (EMULATED device)' if emulate else ''}, "
            f"faults {fault_action}{shadow_note}"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.stack is not None and self.embodiment is not None  # configure succeeded
        self.stack.enable()
        if self._loop_thread is None or not self._loop_thread.is_alive():
            self._stop_loop.clear()
            self._loop_thread = threading.Thread(target=self._control_loop, name="driver_control_loop",
                                                 daemon=True)
            self._loop_thread.start()
        self._lifecycle = "active"
        self.get_logger().info("active: following chunks on " + CHUNK_TOPIC)
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.stack is not None:
            self.stack.disable(self._now_s())
        self._lifecycle = "inactive"
        hw = self.hardware
        if hw is not None and hw.relax_on_stop and hw.supports_relax:
            # Braked to a stop first; the loop stays stopped until activate, so no heartbeat re-energises it.
            self._relax_when_stopped()
            self.get_logger().info(f"inactive: {hw.name} relaxed (torque_off_on_stop)")
        else:
            self.get_logger().info("inactive: holding position")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        self._destroy_entities()
        self.stack = None
        self.core = None
        self.embodiment = None
        self._lifecycle = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        self._destroy_entities()
        self._lifecycle = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"lifecycle error in state {state.label}: stopping the loop, disconnecting")
        self.release()
        self._destroy_entities()
        self._lifecycle = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    @property
    def startup_failure(self) -> str | None:
        """Why autostart did not reach ``active`` (None: it did, or autostart is off). ``spin_node`` exits
        non-zero with it, so a launcher never reports a driver as started that is not running."""
        if not self._param("autostart") or self._lifecycle == "active":
            return None
        return self._configure_error or f"autostart left the driver {self._lifecycle}"

    def release(self) -> None:
        """Brake to a stop, stop the control loop, write one last hold command (or relax the robot where the
        backend is set to ``relax_on_stop``), disconnect. Idempotent; works after the ROS context is shut
        down (SIGINT/SIGTERM), so ``main`` can always call it."""
        self._brake_before_stopping()
        self._stop_control_loop()
        with self._hw_lock:
            hw, stack = self.hardware, self.stack
            if hw is None:
                return
            relax = hw.relax_on_stop and hw.supports_relax
            if stack is not None:
                stack.disable()
                hold = stack.last_command
                relaxed = self.core is not None and self.core.relaxed  # a relaxed robot stays relaxed
                if hold is not None and not stack.shadow and hw.connected and not relaxed and not relax:
                    try:
                        hw.write(hold)
                    except HardwareError as exc:
                        self._log_at_exit(f"final hold command failed: {exc}", error=True)
            if relax and hw.connected:
                try:
                    hw.relax()
                except HardwareError as exc:
                    self._log_at_exit(f"relaxing {hw.name} at shutdown failed: {exc}", error=True)
            try:
                hw.disconnect()
                self._log_at_exit(f"{hw.name} hardware: {'relaxed' if relax else 'holding'}, disconnected")
            except HardwareError as exc:
                self._log_at_exit(f"disconnect failed: {exc}", error=True)
            self.hardware = None
        # The e-stop executor's thread must not outlive the node: a thread still waiting in rcl when the
        # process exits aborts it ("terminate called without an active exception").
        self._stop_safety_inputs()

    def _stop_control_loop(self) -> None:
        self._stop_loop.set()
        if self._loop_thread is not None and self._loop_thread is not threading.current_thread():
            self._loop_thread.join(timeout=2.0)
        self._loop_thread = None

    def _relax_when_stopped(self) -> None:
        """Brake to a stop, stop the loop, relax the backend and forget the last command: re-activation then
        re-engages at the measured pose through the startup guard."""
        self._brake_before_stopping()
        self._stop_control_loop()
        with self._hw_lock:
            hw, stack, core = self.hardware, self.stack, self.core
            if hw is None or not hw.connected or (core is not None and core.relaxed):
                return
            try:
                hw.relax()
            except HardwareError as exc:
                self.get_logger().error(f"relaxing {hw.name} failed: {exc}; it holds its last command")
                return
            if stack is not None:
                stack.forget_command()
            if core is not None:
                core.relaxed = True

    def _brake_before_stopping(self) -> None:
        """A moving arm is braked to a stop by the still-running control loop before the loop ends: the last
        command written must not be a moving one."""
        stack, thread = self.stack, self._loop_thread
        if stack is None or thread is None or not thread.is_alive() or thread is threading.current_thread():
            return
        stack.disable()
        if stack.standing_still:
            return
        stopping_s = float(np.max(stack.velocity / stack.max_acceleration, initial=0.0))
        deadline = time.monotonic() + abs(stopping_s) + SHUTDOWN_BRAKE_MARGIN_S
        while not stack.standing_still and time.monotonic() < deadline and thread.is_alive():
            time.sleep(1.0 / max(self.embodiment.tick_rate_hz if self.embodiment else 100.0, 1.0))

    def _log_at_exit(self, line: str, error: bool = False) -> None:
        # After SIGINT/SIGTERM the context is already shut down and /rosout cannot take the line.
        if not self.context.ok():
            print(f"[{'ERROR' if error else 'INFO'}] [{self.get_name()}] {line}", file=sys.stderr)
        elif error:
            self.get_logger().error(line)
        else:
            self.get_logger().info(line)

    # ---- ROS entities -------------------------------------------------------------------------
    def _create_entities(self) -> None:
        inputs = MutuallyExclusiveCallbackGroup()
        self._joint_pub = (self.create_publisher(JointState, JOINT_STATES_TOPIC, JOINT_STATE_QOS)
                           if self._publish_joint_states else None)
        self._commanded_pub = self.create_publisher(JointState, "~/commanded", JOINT_STATE_QOS)
        self._shadow_pub = self.create_publisher(JointState, "~/shadow_commanded", JOINT_STATE_QOS)
        self._publishers_owned = [p for p in (self._joint_pub, self._commanded_pub, self._shadow_pub)
                                  if p is not None]
        self._subscriptions_owned = [
            # raw: the bytes, decoded by nodes/chunk_cdr.py without building a Python object per point.
            self.create_subscription(JointTrajectory, CHUNK_TOPIC, self._on_chunk, CHUNK_QOS,
                                     callback_group=inputs, raw=self._raw_chunks),
        ]
        self._start_safety_inputs()

    def _start_safety_inputs(self) -> None:
        """/estop and the e-stop, reset and enable services on a companion node with its own executor thread:
        the main executor may be busy for a long time deserialising a large chunk, an e-stop must not wait.

        The companion ignores the process's global ROS arguments: ``-r __node:=...`` would rename it to the
        driver's own name. Service names are the driver's (``<driver>/estop``, ...)."""
        base = self.get_fully_qualified_name()
        node = Node(f"{self.get_name()}_safety", namespace=self.get_namespace(), context=self.context,
                    use_global_arguments=False, start_parameter_services=False)
        node.create_subscription(Bool, ESTOP_TOPIC, self._on_estop_topic, ESTOP_QOS)
        node.create_service(Trigger, f"{base}/estop", self._on_estop_srv)
        node.create_service(Trigger, f"{base}/reset", self._on_reset_srv)
        node.create_service(SetBool, f"{base}/enable", self._on_enable_srv)
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(node)
        self._safety_node, self._safety_executor = node, executor
        self._safety_thread = threading.Thread(target=self._spin_safety_inputs, args=(executor,),
                                               name="driver_safety_inputs", daemon=True)
        self._safety_thread.start()

    @staticmethod
    def _spin_safety_inputs(executor: SingleThreadedExecutor) -> None:
        try:
            executor.spin()
        except (ExternalShutdownException, KeyboardInterrupt, InvalidHandle):
            pass  # the context is shutting down with the process
        except RuntimeError:
            pass  # a take racing the context's shutdown; the main executor reports real failures

    def _stop_safety_inputs(self) -> None:
        executor, node, thread = self._safety_executor, self._safety_node, self._safety_thread
        self._safety_executor, self._safety_node, self._safety_thread = None, None, None
        try:
            if executor is not None:
                executor.shutdown(timeout_sec=1.0)
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5.0)
            if node is not None:
                node.destroy_node()
        except (InvalidHandle, RCLError):
            pass  # the context is already shut down (SIGINT): the entities went with it

    def _destroy_entities(self) -> None:
        self._stop_safety_inputs()
        for srv in self._services_owned:
            self.destroy_service(srv)
        for sub in self._subscriptions_owned:
            self.destroy_subscription(sub)
        for pub in self._publishers_owned:
            self.destroy_publisher(pub)
        self._services_owned, self._subscriptions_owned, self._publishers_owned = [], [], []

    # ---- callbacks (executor threads) ----------------------------------------------------------
    def _on_chunk(self, msg: JointTrajectory | bytes) -> None:
        stack, emb = self.stack, self.embodiment
        if stack is None or emb is None:
            return
        now = self._now_s()
        max_steps = emb.chunk.max_steps_accepted
        try:
            if isinstance(msg, bytes):
                chunk = decode_chunk(msg, emb.control_rate_hz, max_steps)
            elif len(msg.points) > max_steps:
                raise ChunkRejected(REJECT_TOO_LONG, f"{len(msg.points)} steps; this driver accepts at most "
                                                     f"{max_steps} (chunk.max_steps)")
            else:
                chunk = trajectory_to_chunk(msg, emb.control_rate_hz)
        except ChunkRejected as exc:
            stack.count_unparsed(exc.reason)
            self.get_logger().warning(f"rejected chunk: {exc}", throttle_duration_sec=1.0)
            return
        try:
            stack.submit(chunk, now)
        except ChunkRejected as exc:
            self.get_logger().warning(f"rejected chunk: {exc}", throttle_duration_sec=1.0)

    def _on_estop_topic(self, msg: Bool) -> None:
        if msg.data and self.stack is not None:
            self.stack.estop(f"{ESTOP_TOPIC} topic")
            self.get_logger().error(f"E-STOP from {ESTOP_TOPIC}: holding; call ~/reset to clear")

    def _on_estop_srv(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.stack is None:
            response.success, response.message = False, "driver is not configured"
            return response
        self.stack.estop("~/estop service")
        self.get_logger().error("E-STOP from ~/estop service: holding; call ~/reset to clear")
        response.success, response.message = True, "e-stop latched; call ~/reset to clear"
        return response

    def _on_reset_srv(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.stack is None:
            response.success, response.message = False, "driver is not configured"
            return response
        if self.stack.state in (SafetyState.FAULT, SafetyState.ESTOP) and self.hardware is not None:
            # The robot's own latched error (a Franka reflex) first: the driver's fault clears only after it.
            try:
                with self._hw_lock:
                    if self.hardware is not None:
                        self.hardware.recover()
            except HardwareError as exc:
                self.get_logger().error(f"reset refused: the robot did not recover: {exc}")
                response.success, response.message = False, f"hardware recovery failed: {exc}"
                return response
        ok, message = self.stack.reset()
        if not ok:
            self.get_logger().warning(f"reset refused: {message}")
            response.success, response.message = ok, message
            return response
        if self.core is not None:
            self.core.clear_errors()
        self.get_logger().warning(f"reset: {message}; motion restarts from the measured pose")
        response.success, response.message = ok, message
        return response

    def _on_enable_srv(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if self.stack is None:
            response.success, response.message = False, "driver is not configured"
            return response
        self.stack.set_shadow(not request.data)
        response.success = True
        response.message = ("writing to hardware" if request.data
                            else "shadow mode: braking to a stop, then computing without writing")
        self.get_logger().warning(response.message)
        return response

    # ---- control loop (own thread) --------------------------------------------------------------
    # The loop never calls the rclpy logger directly: see nodes/deferred_log.py.
    def _make_realtime(self) -> None:
        priority = int(self._param("control_thread_priority"))
        if priority > 0:
            self._realtime = _set_fifo(priority, "control thread", self._log_later)

    def make_executor_thread_realtime(self) -> bool:
        """Call from the thread that will spin this node: SCHED_FIFO just below the control thread.
        Threads created earlier (DDS) keep their normal priority."""
        priority = int(self._param("control_thread_priority"))
        if priority <= 1:
            return False
        return _set_fifo(priority - 1, "executor thread", lambda level, line: self.get_logger().warning(line))

    def _control_loop(self) -> None:
        emb = self.embodiment
        assert emb is not None
        self._make_realtime()
        period = 1.0 / emb.tick_rate_hz
        deadline = time.perf_counter()
        last_start: float | None = None
        while not self._stop_loop.is_set():
            start = time.perf_counter()
            with self._stats_lock:
                # Lateness against the tick's own deadline: what a motor waiting for its command sees (a
                # period error can be small while every tick is equally late).
                self._lateness_s.append(max(0.0, start - deadline))
                if last_start is not None:
                    self._period_errors_s.append(abs(start - last_start - period))
            last_start = start
            try:
                self._tick()
            except Exception as exc:  # a dead control thread is worse than a latched fault: report, hold
                self._tick_exceptions += 1
                if self._tick_exceptions <= 3:
                    self._log_later("error", f"control tick failed: {exc}\n{traceback.format_exc()}")
                if self.stack is not None:
                    self.stack.latch_fault("internal_error", repr(exc))
            with self._stats_lock:
                self._tick_durations_s.append(time.perf_counter() - start)
            deadline += period
            now = time.perf_counter()
            if now - deadline > period:
                # More than a whole period behind: skip the missed ticks instead of bursting them.
                missed = int((now - deadline) // period)
                self._overruns += missed
                deadline += missed * period
            self._stop_loop.wait(max(0.0, deadline - time.perf_counter()))

    def _tick(self) -> None:
        stack, core = self.stack, self.core
        if stack is None or core is None:
            return
        with self._hw_lock:
            if self.hardware is None:
                return
            # One clock read per tick (~0.1 ms on a small PC): the measurement's stamp is the tick's time.
            now = self.get_clock().now()
            cycle = core.cycle(now.nanoseconds * 1e-9)
        for level, line in cycle.events:
            self._log_later(level, line)
        result, sent = cycle.tick, cycle.sent
        stamp = now.to_msg()
        if cycle.positions is not None and self._joint_pub is not None:
            self._joint_pub.publish(self._joint_state(stamp, cycle.positions))
        if sent is not None:
            self._commanded_pub.publish(self._joint_state(stamp, sent))
        elif result.command is not None and result.shadow:
            self._shadow_pub.publish(self._joint_state(stamp, result.command))
        if result.state != self._last_state:
            previous = self._last_state.value if self._last_state else "-"
            line = f"state {previous} -> {result.state.value} ({result.reason})"
            if result.state in (SafetyState.ESTOP, SafetyState.FAULT):
                fault = stack.fault
                self._log_later("error", line + (f": {fault[1]}" if fault and fault[1] else ""))
            elif result.state in (SafetyState.HOLD, SafetyState.STOPPED):
                self._log_later("warning", line)
            else:
                self._log_later("info", line)
            self._last_state = result.state

    def _joint_state(self, stamp: Any, positions: np.ndarray) -> JointState:
        assert self.embodiment is not None
        msg = JointState(name=self.embodiment.joint_names, position=[float(x) for x in positions])
        msg.header.stamp = stamp
        return msg

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ---- diagnostics ----------------------------------------------------------------------------
    def period_error_ms(self) -> dict[str, float]:
        with self._stats_lock:
            errs = list(self._period_errors_s)
        return percentiles_ms("period_error", errs, to_ms=1e3)

    def tick_lateness_ms(self) -> dict[str, float]:
        """How late each tick started after its deadline."""
        with self._stats_lock:
            lateness = list(self._lateness_s)
        return percentiles_ms("tick_lateness", lateness, to_ms=1e3)

    def tick_duration_ms(self) -> dict[str, float]:
        """How long the tick itself takes (read, stack, write, publish): the loop's own share of a period."""
        with self._stats_lock:
            durations = list(self._tick_durations_s)
        return percentiles_ms("tick_duration", durations, to_ms=1e3)

    def _diagnostics_snapshot(self) -> tuple[int, str, dict[str, Any]]:
        stack, emb = self.stack, self.embodiment
        values: dict[str, Any] = {"lifecycle": self._lifecycle}
        if stack is None or emb is None:
            values["state"] = "UNCONFIGURED"
            if self._configure_error:
                return ERROR, f"configure failed: {self._configure_error}", values
            return WARN, "not configured", values
        values.update(stack.snapshot())
        values.update(self.period_error_ms())
        values.update(self.tick_lateness_ms())
        values.update(self.tick_duration_ms())
        values.update({
            "embodiment": emb.name,
            "backend": self.hardware.name if self.hardware is not None else "",
            "hardware_emulated": bool(self._param("emulate_hardware")),
            "tick_rate_hz": emb.tick_rate_hz,
            "overruns": self._overruns,
            "control_thread_realtime": self._realtime,
            "tick_exceptions": self._tick_exceptions,
            "joint_states_published": self._publish_joint_states,
        })
        core = self.core
        if core is not None:
            values.update({
                "hardware_ready": core.hardware_ready,
                "hardware_read_errors": core.read_errors,
                "hardware_write_errors": core.write_errors,
                "hardware_not_ready_ticks": core.not_ready_ticks,
                "hardware_relaxed": core.relaxed,
                "hardware_relaxes": core.relaxes,
            })
        state = stack.state
        level = ERROR if state in (SafetyState.ESTOP, SafetyState.FAULT) else (
            WARN if state in (SafetyState.HOLD, SafetyState.STOPPED) else OK)
        return level, f"{state.value}: {stack.reason}", values


def _set_fifo(priority: int, what: str, log: Any) -> bool:
    refused = set_thread_fifo(priority, "steady control ticks")
    if refused:
        log("warning", f"{what} stays at normal priority: {refused}")
    return not refused


def main(args: list[str] | None = None) -> None:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    spin_node(DriverNode, before_spin=lambda node: node.make_executor_thread_realtime(), args=args)


if __name__ == "__main__":
    main()
