#!/usr/bin/env python3
"""Docker action entrypoint: turn the action's inputs into one ``mlobs`` call, nothing else.

GitHub passes each input as ``INPUT_<NAME>``: upper-cased, spaces turned into ``_``, hyphens kept
(``loki-url`` arrives as ``INPUT_LOKI-URL``). Each input is the CLI option of the same name;
inputs that belong to other modes are ignored, and secrets travel by environment, never argv.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping


class InputError(Exception):
    """An action input that cannot become a CLI call."""


def build_invocation(env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """Return (argv for ``mlobs``, extra environment) for the inputs in ``env``."""
    from mlobs.cli import SECRET_OPTIONS, cli, env_name

    # Our input names are lower-case with hyphens and no spaces, so lower() restores them.
    inputs = {key[len("INPUT_") :].lower(): value for key, value in env.items() if key.startswith("INPUT_")}
    mode = inputs.pop("mode", "").strip()
    if mode not in cli.commands:
        known = ", ".join(sorted(cli.commands))
        raise InputError(f"input 'mode' must be one of {known}, got {mode!r}")
    command = cli.commands[mode]
    by_name = {
        opt[2:]: param for param in command.params for opt in param.opts if opt.startswith("--")
    }
    argv, extra_env = [mode], {}
    for name in sorted(inputs):
        value = inputs[name].strip()
        param = by_name.get(name)
        if not value or param is None:
            continue  # empty, or an input of another mode arriving with its default
        if name in SECRET_OPTIONS:
            extra_env[env_name(name)] = value
        elif getattr(param, "multiple", False):
            argv += [f"--{name}={item}" for item in re.split(r"[\n,]", value) if item.strip()]
        else:
            argv.append(f"--{name}={value}")
    return argv, extra_env


def main() -> int:
    try:
        argv, extra_env = build_invocation(os.environ)
    except InputError as exc:
        from mlobs.github.actions import GithubActions

        print(f"mlobs: error: {exc}", file=sys.stderr)
        actions = GithubActions(env=os.environ)
        if actions.in_actions:
            actions.error(str(exc), title="mlobs")
        actions.set_output("result", "error")
        return 2
    os.environ.update(extra_env)
    from mlobs.cli import main as mlobs_main

    mlobs_main(argv)  # exits with the mode's code
    return 0


if __name__ == "__main__":
    sys.exit(main())
