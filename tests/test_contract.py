"""The action's contract: action.yml ⇄ CLI ⇄ entrypoint, and the linters on every asset."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlobs import __version__, modes
from mlobs.cli import SECRET_OPTIONS, cli

REPO = Path(__file__).resolve().parents[1]
ACTION = yaml.safe_load((REPO / "action.yml").read_text())
BIN = Path(sys.executable).parent

sys.path.insert(0, str(REPO))
from entrypoint import build_invocation  # noqa: E402


def cli_options() -> dict[str, object]:
    """Every long option of every mode, with its default."""
    options = {}
    for command in cli.commands.values():
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and opt != "--help":
                    options[opt[2:]] = param
    return options


def test_every_input_is_a_cli_option_and_back():
    inputs = set(ACTION["inputs"]) - {"mode"}
    assert inputs == set(cli_options())


def test_input_defaults_agree_with_cli_defaults():
    for name, param in cli_options().items():
        default = ACTION["inputs"][name].get("default", "")
        if name == "github-token":
            assert default == "${{ github.token }}"
            continue
        cli_default = param.default if param.default is not None and "UNSET" not in repr(param.default) else ""
        if isinstance(cli_default, bool):
            cli_default = "true" if cli_default else "false"
        elif cli_default in (None, ()):
            cli_default = ""
        assert str(default) == str(cli_default), name


def test_every_input_has_a_description_and_outputs_are_declared():
    for name, spec in ACTION["inputs"].items():
        assert spec.get("description"), name
    assert set(ACTION["outputs"]) == {"result", "summary-json", "report-path", "run-id",
                                      "snapshot-id", "violations", "report-url"}
    assert ACTION["runs"]["using"] == "docker"
    for mode in modes.ALL:
        assert f"`{mode}`" in ACTION["inputs"]["mode"]["description"]


def test_inputs_map_to_cli_arguments_with_hyphens_kept():
    env = {
        "INPUT_MODE": "slo-validate",
        "INPUT_LOKI-URL": "http://loki:3100",
        "INPUT_FAIL-ON": "inconclusive",
        "INPUT_DRY-RUN": "true",
        "INPUT_FEATURES": "features/a.feature\nfeatures/b.feature",
        "INPUT_GITHUB-TOKEN": "ghs_secret",
        "INPUT_LOKI-PASSWORD": "pw",
        "INPUT_DATASET": "golden.parquet",  # an evaluate input: not for slo-validate
        "INPUT_WINDOW": "",
        "LOKI_URL": "ignored",
    }
    argv, extra_env = build_invocation(env)
    assert argv == ["slo-validate", "--dry-run=true", "--fail-on=inconclusive",
                    "--features=features/a.feature", "--features=features/b.feature",
                    "--loki-url=http://loki:3100"]
    # secrets never reach argv (visible in `ps`), only the child's environment
    assert extra_env == {"MLOBS_GITHUB_TOKEN": "ghs_secret", "MLOBS_LOKI_PASSWORD": "pw"}
    assert set(SECRET_OPTIONS) >= {"github-token", "loki-password"}


def test_bad_mode_input_is_one_clear_line_and_exit_2(tmp_path):
    out = tmp_path / "out"
    out.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INPUT_", "GITHUB_"))}
    env["INPUT_MODE"] = "validate-everything"
    env["GITHUB_OUTPUT"] = str(out)
    proc = subprocess.run([sys.executable, str(REPO / "entrypoint.py")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mlobs: error: input 'mode' must be one of evaluate, publish-report, slo-validate, "
        "got 'validate-everything'"]
    assert out.read_text() == "result=error\n"


def test_cli_help_lists_modes_and_documents_every_option_env_var():
    proc = subprocess.run([str(BIN / "mlobs"), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for mode in modes.ALL:
        assert mode in proc.stdout
    for mode, command in cli.commands.items():
        help_text = subprocess.run([str(BIN / "mlobs"), mode, "--help"], capture_output=True,
                                   text=True, timeout=60).stdout
        flat = " ".join(help_text.split())
        for param in command.params:
            if param.name == "help":
                continue
            assert param.opts[0] in flat, (mode, param.opts)
            assert param.envvar[0] in flat.replace("- ", "-").replace(" _", "_"), (mode, param.envvar)


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from mlobs.cli import cli; "
            "heavy = [m for m in ('github', 'behave', 'scipy', 'numpy', 'requests', 'pyiceberg') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_bad_option_value_is_one_line_exit_2_and_result_error(tmp_path):
    out = tmp_path / "out"
    out.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_"))}
    env["GITHUB_OUTPUT"] = str(out)
    proc = subprocess.run([str(BIN / "mlobs"), "slo-validate", "--fail-on=sometimes"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlobs: error: Invalid value for '--fail-on'")
    assert "sometimes" in lines[0] and out.read_text() == "result=error\n"


def test_action_version_matches_package():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'version = "{__version__}"' in pyproject


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: .ci/run installs it with the dev extra")
    return found


def test_actionlint_on_workflows():
    workflows = sorted(str(p) for p in (REPO / ".github" / "workflows").glob("*.y*ml"))
    assert workflows
    proc = subprocess.run([_tool("actionlint"), "-shellcheck=", "-pyflakes=", *workflows],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_action_yml_and_workflows_match_githubs_schemas():
    checks = [("vendor.github-actions", [str(REPO / "action.yml"), str(REPO / "prebuilt" / "action.yml")]),
              ("vendor.github-workflows",
               sorted(str(p) for p in (REPO / ".github" / "workflows").glob("*.y*ml")))]
    for schema, files in checks:
        proc = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", schema, *files],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_on_dockerfile():
    proc = subprocess.run([_tool("hadolint"), str(REPO / "Dockerfile")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_readme_inputs_table_is_generated_from_action_yml():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "readme_inputs.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, "README.md is stale: run python scripts/readme_inputs.py"


def test_readme_opens_with_the_two_setup_commands():
    lines = (REPO / "README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1: lines.index("```")]
    assert [line.split("#")[0].strip() for line in block] == ["bash scripts/demo", "bash scripts/test"]
    assert "scripts/test" in (REPO / ".ci" / "run").read_text()


def test_prebuilt_action_matches_action_yml_and_the_package_version():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "prebuilt_action.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, "prebuilt/action.yml is stale: run python scripts/prebuilt_action.py"
    prebuilt = yaml.safe_load((REPO / "prebuilt" / "action.yml").read_text())
    assert prebuilt["inputs"] == ACTION["inputs"] and prebuilt["outputs"] == ACTION["outputs"]
    assert prebuilt["runs"]["image"] == f"docker://ghcr.io/org/ml-observability-action:v{__version__}"
    release = (REPO / ".github" / "workflows" / "release.yml").read_text()
    assert "prebuilt/action.yml" in release  # the release refuses a tag that does not match


def test_an_unexpected_crash_is_exit_2_not_a_violation(tmp_path):
    (tmp_path / "logs.jsonl").write_text("{}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "MLOBS_"))}
    code = ("import sys, mlobs.slo.mode as m\n"
            "def boom(*a, **k): raise RuntimeError('kaboom with s3cr3t-value')\n"
            "m.run = boom\n"
            "from mlobs.cli import main\n"
            "sys.argv = ['mlobs', 'slo-validate', '--logs-file=logs.jsonl', '--github-token=']\n"
            "main()\n")
    env["MLOBS_LOKI_PASSWORD"] = "s3cr3t-value"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mlobs: error: internal error: RuntimeError: kaboom with *** — set debug: true "
        "(MLOBS_DEBUG=1) for the traceback, and please report it"]
    # The debug input adds the traceback after the line, redacted like everything else.
    proc = subprocess.run([sys.executable, "-c", code.replace("'--github-token='", "'--github-token=', "
                                                              "'--debug'")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and lines[0].startswith("mlobs: error: internal error: RuntimeError")
    assert lines[1] == "Traceback (most recent call last):" and "in boom" in proc.stderr
    assert "s3cr3t-value" not in proc.stderr


# --- settings: one place for defaults, nothing below the CLI reads the environment -------------

def test_every_options_default_is_its_settings_fields():
    from mlobs import config

    for mode, command in cli.commands.items():
        classes = config.MODE_SETTINGS.get(mode, (config.CommonSettings, config.LakeSettings))
        for param in command.params:
            name = param.opts[0][2:]
            if name == "help":
                continue
            try:
                expected = config.input_default(name, *classes)
            except KeyError:
                assert mode not in config.MODE_SETTINGS, f"{mode}: --{name} has no settings field"
                continue
            default = None if "UNSET" in repr(param.default) else param.default
            assert (default or None) == (expected or None) and type(default) is type(expected) \
                or (default in (None, ()) and expected in (None, ())), (mode, name, default, expected)


def test_settings_built_from_no_inputs_hold_the_defaults(tmp_path):
    """click parses an empty command line; the settings built from it equal the fields' defaults
    (paths resolved against the working directory)."""
    from dataclasses import fields

    from mlobs import config
    from mlobs.report.stores import Target

    bundled = {"features": (config.bundled("features"),), "hugo_dir": config.bundled("hugo")}
    derived = {"working_directory": tmp_path, "publish_to": Target("local", str(tmp_path / "public")),
               "versions": ("v1",), "env": {}, "variables": None, "redactor": None, "github": None,
               "catalog_config": None, "mode": None, "common": None, "lake": None}
    required = {modes.EVALUATE: ["--dataset=golden.csv", "--bento-url=http://127.0.0.1:9"]}
    derived.update({"dataset": tmp_path / "golden.csv", "bento_url": "http://127.0.0.1:9"})
    for mode in config.MODE_SETTINGS:
        args = [f"--working-directory={tmp_path}", "--model-version=v1", *required.get(mode, [])]
        params = cli.commands[mode].make_context(mode, list(args)).params
        settings = config.build_settings(mode, params, {})
        objects = [settings, settings.common, getattr(settings, "lake", None)]
        for obj in filter(None, objects):
            for f in fields(obj):
                value = getattr(obj, f.name)
                if f.name in bundled:
                    assert value == bundled[f.name], (mode, f.name)
                    continue
                if f.name in derived:
                    if derived[f.name] is not None:
                        assert value == derived[f.name], (mode, f.name)
                    continue
                default = config._default(type(obj), f.name)
                if f.name == "model_version":
                    default = "v1"
                if isinstance(default, Path):
                    default = tmp_path / default
                assert value == default, (mode, f.name, value, default)




def test_nothing_below_the_cli_reads_the_environment():
    import ast

    readers = set()
    for path in sorted((REPO / "lib" / "mlobs").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "os" and node.attr in ("environ", "getenv", "putenv"):
                name = node.attr
            elif isinstance(node, ast.ImportFrom) and node.module == "os" \
                    and {a.name for a in node.names} & {"environ", "getenv"}:
                name = "import"
            if name:
                readers.add(str(path.relative_to(REPO / "lib" / "mlobs")))
    assert readers == {"cli.py"}


def test_cli_action_matches_action_yml_and_githubs_schema():
    # cli/action.yml runs the same entrypoint on the runner (beside the user's dependencies): the
    # same inputs and outputs, plus the interpreter to use.
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "cli_action.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, "cli/action.yml is stale: run python scripts/cli_action.py"
    composite = yaml.safe_load((REPO / "cli" / "action.yml").read_text())
    assert {k: v for k, v in composite["inputs"].items() if k != "python"} == ACTION["inputs"]
    assert set(composite["outputs"]) == set(ACTION["outputs"])
    assert composite["runs"]["using"] == "composite"
    run_env = composite["runs"]["steps"][-1]["env"]
    for name in ACTION["inputs"]:  # every input reaches entrypoint.py as the runner would pass it
        assert run_env[f"INPUT_{name.upper()}"] == f"${{{{ inputs.{name} }}}}"
    proc = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions",
                           str(REPO / "cli" / "action.yml")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_typed_defaults_do_not_narrow_what_an_input_accepts(tmp_path):
    """A default of 0.05 or 60 in the settings must not make click refuse '5%' or '90s'."""
    from mlobs import config

    args = [f"--working-directory={tmp_path}", "--model-version=v1", "--dataset=d.csv",
            "--bento-url=http://127.0.0.1:9", "--max-error-rate=5%", "--bento-timeout=90s",
            "--batch-size=32", "--input-format=records"]
    params = cli.commands[modes.EVALUATE].make_context(modes.EVALUATE, args).params
    settings = config.build_settings(modes.EVALUATE, params, {})
    assert (settings.max_error_rate, settings.bento_timeout, settings.batch_size,
            settings.input_format) == (0.05, 90.0, 32, ("records", None))
