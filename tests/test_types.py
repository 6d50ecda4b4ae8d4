"""Static types: mypy checks the packages that pyproject.toml lists.

The packages are listed once, in C{[tool.mypy] files}; the settings there
are strict enough that a value of the wrong type passed to an annotated
function is an error. mypy keeps its cache under the system's temporary
directory, so that a run after the first reads only what changed.
"""

import tempfile
import textwrap
import tomllib
from pathlib import Path

import mypy.api

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
CACHE = Path(tempfile.gettempdir()) / "cfosproxy-mypy-cache"

# What must be among the checked packages whatever else is added.
REQUIRED = ("cfosproxy/ocpp", "cfosproxy/site", "cfosproxy/core")


def run_mypy(monkeypatch, *paths):
    """Run mypy with the project's settings from the top of the tree (the
    listed files are relative to it), on C{paths} or else on the files
    pyproject.toml lists.

    @return: mypy's report and its exit status.
    """
    monkeypatch.chdir(ROOT)
    stdout, stderr, status = mypy.api.run(
        ["--config-file", str(PYPROJECT), "--cache-dir", str(CACHE), *map(str, paths)]
    )
    return stdout + stderr, status


def mypy_settings():
    """The C{[tool.mypy]} section of pyproject.toml."""
    with PYPROJECT.open("rb") as file:
        return tomllib.load(file)["tool"]["mypy"]


def checked_packages():
    """The paths listed in C{[tool.mypy] files}."""
    return mypy_settings()["files"]


def modules_with_ignored_errors():
    """The modules of the per-module overrides that set C{ignore_errors}."""
    ignored = set()
    for override in mypy_settings().get("overrides", []):
        if override.get("ignore_errors"):
            modules = override["module"]
            ignored.update([modules] if isinstance(modules, str) else modules)
    return ignored


def own_modules_called_untyped():
    """The cfosproxy modules in C{untyped_calls_exclude}: calls into them
    go unchecked."""
    return {
        module
        for module in mypy_settings().get("untyped_calls_exclude", [])
        if module == "cfosproxy" or module.startswith("cfosproxy.")
    }


def test_the_listed_packages_type_check(monkeypatch):
    """mypy finds no fault in the packages listed in pyproject.toml, and
    it read every module of them (not an empty or mistyped list)."""
    packages = checked_packages()
    assert set(REQUIRED) <= set(packages)
    report, status = run_mypy(monkeypatch)
    assert status == 0, report
    modules = sum(len(list((ROOT / package).rglob("*.py"))) for package in packages)
    assert f"no issues found in {modules} source files" in report, report


def test_no_module_is_exempt():
    """No module has its faults ignored (a per-module C{ignore_errors}),
    and no module of cfosproxy is one whose untyped calls are let pass
    (C{untyped_calls_exclude}): every module of the listed packages is
    checked as strictly as the others."""
    assert modules_with_ignored_errors() == set()
    assert own_modules_called_untyped() == set()


def test_a_wrong_type_across_an_interface_is_found(monkeypatch, tmp_path):
    """A caller that passes a str where a checked function takes an int,
    a plain dict where it takes a parsed profile, or a str where the
    core takes an object providing a zope interface, is reported."""
    caller = tmp_path / "caller.py"
    caller.write_text(
        textwrap.dedent(
            """\
            from twisted.internet.task import Clock

            from cfosproxy.core.session import OcppSession
            from cfosproxy.ocpp.profiles import manager_profile_id
            from cfosproxy.ocpp.profileset import ProfileSet

            manager_profile_id("1")
            ProfileSet().set({"chargingProfileId": 1})
            OcppSession("CB-1", "ws://192.0.2.1", lambda call: {}, (), Clock(), 30)
            """
        )
    )
    report, status = run_mypy(monkeypatch, caller)
    assert status == 1, report
    assert (
        'caller.py:7: error: Argument 1 to "manager_profile_id" has incompatible type "str"; '
        'expected "int"'
    ) in report, report
    assert 'caller.py:8: error: Argument 1 to "set" of "ProfileSet" has incompatible type' in (
        report
    ), report
    assert (
        'caller.py:9: error: Argument 2 to "OcppSession" has incompatible type "str"; '
        'expected "IPeerConnection"'
    ) in report, report


def test_the_daemon_s_objects_fit_the_manager_s_types(monkeypatch, tmp_path):
    """What the daemon hands the load manager (its configuration, the
    registry, the OCPP actuator, a reactor's clock) has the types the
    manager declares: the protocols it reads its settings through match
    the real configuration."""
    wiring = tmp_path / "wiring.py"
    wiring.write_text(
        textwrap.dedent(
            """\
            from twisted.internet.task import Clock

            from cfosproxy.config import Config, WallboxConfig
            from cfosproxy.core.devices import DeviceRegistry
            from cfosproxy.site.manager import DeviceLimits, LoadManager
            from cfosproxy.site.ocpplimits import ChargingProfileActuator


            def save(name: str, enabled: bool) -> None:
                pass


            def wire(
                config: Config,
                registry: DeviceRegistry,
                actuator: ChargingProfileActuator,
                wallbox: WallboxConfig,
            ) -> LoadManager:
                limits: DeviceLimits = wallbox
                manager = LoadManager(config, registry, Clock(), save)
                manager.connect_actuators({"ocpp": actuator})
                return manager
            """
        )
    )
    report, status = run_mypy(monkeypatch, wiring)
    assert status == 0, report


def test_the_daemon_s_objects_fit_the_core_s_types(monkeypatch, tmp_path):
    """What the daemon hands the core (its configuration, a reactor's
    clock, the local central system as a wallbox's handler, the load
    manager as an observer and as what steers the backends' profiles) has
    the types the core declares: the protocols the registry, the hub and
    the backends' profiles read through match the real objects."""
    wiring = tmp_path / "wiring.py"
    wiring.write_text(
        textwrap.dedent(
            """\
            from collections.abc import Callable

            from twisted.internet.task import Clock

            from cfosproxy.config import Config
            from cfosproxy.core.backendprofiles import BackendProfiles
            from cfosproxy.core.devices import DeviceRegistry
            from cfosproxy.core.hub import ChargePointHub
            from cfosproxy.core.localcs import LocalCentralSystem
            from cfosproxy.site.manager import LoadManager


            def wire(
                config: Config, manager: LoadManager, next_id: Callable[[], int]
            ) -> ChargePointHub:
                clock = Clock()
                registry = DeviceRegistry(config, clock)
                local = LocalCentralSystem(clock, config.server.heartbeat_interval, next_id)
                BackendProfiles().serve(registry, manager)
                return ChargePointHub(
                    config.server, registry, lambda chargebox_id: local, clock, [manager]
                )
            """
        )
    )
    report, status = run_mypy(monkeypatch, wiring)
    assert status == 0, report
