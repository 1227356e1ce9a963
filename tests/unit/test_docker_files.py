"""docker/: the two images and the compose file, checked statically (no Docker engine runs in CI).

Every path they copy or name exists in the repository; every command they run is a documented
``molmoact2-ros`` command whose flags the real CLI parser accepts; the compose file uses host networking,
the two-hosts DDS profile, listed devices instead of ``privileged``, a checkpoints volume and variables for
the embodiment and backend; and the robot image for YAM or Franka does not pull torch (resolved through
setup.py's extras and the installed packages' own dependency metadata), while the SO arms' one does.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
IMAGE_ROOT = "/ws/src/molmoact2_ros"  # WORKDIR of both images: the repository's copy
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


# ---- parsing ----------------------------------------------------------------------------------------------
def dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in (DOCKER / name).read_text().splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not buf):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def instructions(name: str, kind: str) -> list[str]:
    return [args for word, args in dockerfile(name) if word == kind]


def exec_form(args: str) -> list[str]:
    """CMD/ENTRYPOINT arguments: JSON exec form, required (a shell form would hide the command)."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ${VAR}, ${VAR:-default} with ``env`` (default: nothing set, so the defaults)."""
    env = env or {}
    return VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def setup_extras() -> dict[str, list[str]]:
    """setup.py's EXTRAS, read without running setup()."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "EXTRAS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no EXTRAS dict")


def documented_text() -> str:
    return "\n".join(p.read_text() for p in DOCS)


def image_commands() -> list[tuple[str, list[str]]]:
    """Every command a container runs: each image's CMD and each compose service's command."""
    cmds = [(name, exec_form(instructions(name, "CMD")[-1])) for name in ("Dockerfile.policy", "Dockerfile.robot")]
    for svc, body in compose()["services"].items():
        cmds.append((f"compose {svc}", [interpolate(str(a)) for a in body["command"]]))
    return cmds


def copied_paths(name: str) -> list[str]:
    """Sources of every COPY (build context = the repository root)."""
    sources = []
    for args in instructions(name, "COPY"):
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        sources += parts[:-1]
    return sources


def in_image(name: str, repo_relative: str) -> bool:
    """Whether the image has ``repo_relative`` at the same place under IMAGE_ROOT (copied itself or a parent)."""
    target = Path(repo_relative)
    return any(target == Path(src.rstrip("/")) or Path(src.rstrip("/")) in target.parents
               for src in copied_paths(name))


# ---- the images -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["Dockerfile.policy", "Dockerfile.robot"])
def test_image_base_copies_and_entrypoint(name: str) -> None:
    assert instructions(name, "FROM") == ["ros:kilted-ros-base"], "both images build on ROS 2 Kilted's base"
    assert instructions(name, "WORKDIR") == [IMAGE_ROOT]
    for src in copied_paths(name):
        assert (REPO / src).exists(), f"{name}: COPY {src}: no such path in the repository"
    # setup.py's data_files must all be in the image, or `pip install` of the package fails there.
    for needed in ("setup.py", "package.xml", "resource", "molmoact2_ros", "launch", "config/embodiments",
                   "config/dds"):
        assert in_image(name, needed), f"{name} does not copy {needed}, which the package build needs"
    entry = exec_form(instructions(name, "ENTRYPOINT")[-1])
    assert entry == ["/entrypoint.sh"] and "docker/entrypoint.sh /entrypoint.sh" in instructions(name, "COPY")
    script = DOCKER / "entrypoint.sh"
    assert script.stat().st_mode & 0o111, "docker/entrypoint.sh must be executable (COPY keeps the mode)"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "/opt/ros/kilted/setup.bash" in text and 'exec "$@"' in text
    profile = re.search(r"FASTDDS_DEFAULT_PROFILES_FILE=(\S+)", text)
    assert profile and (REPO / Path(profile.group(1)).relative_to(IMAGE_ROOT)).is_file()


def pip_installs(name: str, args: dict[str, str]) -> list[str]:
    """Requirements every `pip install` in the image's RUN lines asks for, with ARGs substituted."""
    reqs: list[str] = []
    for run in instructions(name, "RUN"):
        for cmd in re.split(r"&&|;", run):
            words = shlex.split(interpolate(cmd.replace("${CAMERAS:+,${CAMERAS}}",
                                                        f",{args['CAMERAS']}" if args.get("CAMERAS") else ""),
                                            args))
            if "pip" not in " ".join(words[:1]) or "install" not in words:
                continue
            rest = words[words.index("install") + 1:]
            skip_next = False
            for w in rest:
                if skip_next:
                    skip_next = False
                elif w in ("--index-url", "-i", "--extra-index-url"):
                    skip_next = True
                elif w == "-e" or w.startswith("-"):
                    continue
                else:
                    reqs.append(w)
    return reqs


def resolve(reqs: list[str]) -> set[str]:
    """Names of everything ``reqs`` installs: the package's extras expanded through setup.py, the rest through
    each installed distribution's own requirements (with the extras asked for)."""
    extras = setup_extras()
    todo: list[str] = []
    for r in reqs:
        m = re.fullmatch(r"\.\[(.*)\]|\.", r)
        if m:
            for extra in filter(None, (m.group(1) or "").split(",")):
                assert extra in extras, f"extra {extra!r} is not in setup.py"
                todo += extras[extra]
        else:
            todo.append(r)
    seen: set[str] = set()
    while todo:
        req = Requirement(todo.pop())
        key = f"{req.name.lower().replace('_', '-')}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            deps = md.requires(req.name) or []
        except md.PackageNotFoundError:
            pytest.fail(f"{req.name} (a dependency of the image) is not installed here, so its dependencies cannot "
                        "be checked; scripts/setup.sh installs every hardware extra")
        for dep in deps:
            d = Requirement(dep)
            envs = [{"extra": e} for e in ("", *req.extras)]
            if d.marker is None or any(d.marker.evaluate(e) for e in envs):
                todo.append(str(Requirement(f"{d.name}{'[' + ','.join(d.extras) + ']' if d.extras else ''}")))
    return {k.split("[")[0] for k in seen}


@pytest.mark.parametrize("arm", ["yam", "franka"])
def test_robot_image_for_yam_and_franka_does_not_pull_torch(arm: str) -> None:
    reqs = pip_installs("Dockerfile.robot", {"ARM": arm, "CAMERAS": "realsense"})
    assert f".[{arm},realsense]" in reqs, reqs
    assert not any(r.startswith(".[") and "ros" in r[2:-1].split(",") for r in reqs), "distro rclpy, never `ros`"
    installed = resolve(reqs)
    assert "torch" not in installed and "lerobot" not in installed, sorted(installed)


def test_robot_image_for_so_arms_brings_torch_as_documented() -> None:
    # The so100 extra is LeRobot's Feetech bus: LeRobot depends on torch. Documented, so checked both ways.
    assert "torch" in resolve(pip_installs("Dockerfile.robot", {"ARM": "so100", "CAMERAS": "realsense"}))
    assert "so100" in (DOCKER / "Dockerfile.robot").read_text().split("BRINGS TORCH")[0].splitlines()[-1]


def test_robot_image_build_arg_choices_are_extras() -> None:
    text = (DOCKER / "Dockerfile.robot").read_text()
    choices = re.search(r"case \"\$\{ARM\}\" in ([\w|]+)\)", text)
    assert choices, "Dockerfile.robot must refuse an unknown ARM"
    assert set(choices.group(1).split("|")) == {"so100", "yam", "franka"} <= set(setup_extras())


def test_policy_image_installs_cuda_torch_and_the_policy_extra() -> None:
    reqs = pip_installs("Dockerfile.policy", {"TORCH_INDEX_URL": "https://pypi.org/simple"})
    assert "torch" in reqs and ".[policy]" in reqs, reqs
    assert not any(r.startswith(".[") and "ros" in r[2:-1].split(",") for r in reqs), "distro rclpy, never `ros`"


# ---- commands ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where,cmd", image_commands(), ids=[w for w, _ in image_commands()])
def test_commands_are_documented_and_accepted_by_the_cli(where: str, cmd: list[str]) -> None:
    from molmoact2_ros.cli import build_parser

    docs = documented_text()
    assert cmd[0] == "molmoact2-ros", f"{where}: runs {cmd[0]!r}, not the documented CLI"
    assert f"molmoact2-ros {cmd[1]}" in docs, f"{where}: `molmoact2-ros {cmd[1]}` is not in README.md or docs/"
    for arg in cmd[2:]:
        if arg.startswith("--"):
            flag = arg.split("=")[0]
            assert flag in docs, f"{where}: {flag} is not documented in README.md or docs/"
    build_parser().parse_args(cmd[1:])  # the real parser accepts it (SystemExit on an unknown flag)
    if "--params-file" in cmd:
        path = cmd[cmd.index("--params-file") + 1]
        assert (REPO / path).is_file(), f"{where}: --params-file {path} is not in the repository"
        for name in ("Dockerfile.policy", "Dockerfile.robot"):
            assert in_image(name, path), f"{name} does not copy {path}, which its command reads"


# ---- compose ----------------------------------------------------------------------------------------------
def test_compose_host_network_devices_volume_and_variables() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    assert not re.search(r"^\s*privileged\s*:\s*true", text, re.M), "list devices instead of privileged"
    services = compose()["services"]
    assert set(services) == {"policy", "robot"}
    for name, svc in services.items():
        assert svc["network_mode"] == "host", name
        assert (REPO / "docker" / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve().is_file()
        env = {k: interpolate(str(v)) for k, v in svc["environment"].items()}
        profile = Path(env["FASTDDS_DEFAULT_PROFILES_FILE"])
        assert (REPO / profile.relative_to(IMAGE_ROOT)).is_file(), profile
        assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] in ("SUBNET", "LOCALHOST"), env
        assert "ROS_STATIC_PEERS" in env and "ROS_DOMAIN_ID" in env
        assert "${EMBODIMENT" in json.dumps(svc["command"]), f"{name}: embodiment must be a variable"
    robot, policy = services["robot"], services["policy"]
    assert "${BACKEND" in json.dumps(robot["command"]), "robot: backend must be a variable"
    assert "${ARM" in json.dumps(robot["build"]["args"]), "robot: the arm family's extra must be a variable"
    devices = [interpolate(d).split(":")[1] for d in robot["devices"]]
    assert any(d.startswith("/dev/tty") for d in devices) and any(d.startswith("/dev/video") for d in devices)
    assert any(interpolate(v).split(":")[1] == "/checkpoints" for v in policy["volumes"]), "checkpoints volume"
    assert interpolate(str(policy["environment"]["HF_HOME"])).startswith("/checkpoints")
    gpu = policy["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    # The variables take effect: a robot PC for a YAM on its i2rt backend.
    cmd = [interpolate(str(a), {"EMBODIMENT": "yam_bimanual", "BACKEND": "i2rt"}) for a in robot["command"]]
    assert cmd[cmd.index("--embodiment") + 1] == "yam_bimanual" and "--backend=i2rt" in cmd


def test_two_hosts_params_file_sets_jpeg_on_both_sides() -> None:
    params = yaml.safe_load((DOCKER / "two_hosts_params.yaml").read_text())
    assert params["molmoact2_perception"]["ros__parameters"]["publish_compressed"] is True
    assert params["molmoact2_policy"]["ros__parameters"]["image_transport"] == "compressed"
