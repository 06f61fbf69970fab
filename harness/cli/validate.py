"""``harness validate`` (check YAML configs strictly) and ``harness ls`` (list the registries)."""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

from harness.cli.common import Subparsers, command
from harness.errors import HarnessError, UserError
from harness.registries import all_registries
from harness.validate import check_file


def _files_and_overrides(items: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Split ``harness validate``'s arguments into files, ``key=value`` overrides and
    patterns that match nothing. A quoted glob (``'sweeps/**/*.yaml'``, which the shell
    did not expand) is expanded here, ``**`` spanning folders; an argument with ``=`` that
    is not an existing file is an override."""
    files: list[str] = []
    overrides: list[str] = []
    unmatched: list[str] = []
    for item in items:
        if Path(item).exists():
            files.append(item)
        elif "=" in item:
            overrides.append(item)
        elif glob.has_magic(item):
            matched = sorted(glob.glob(item, recursive=True))
            files += matched
            unmatched += [] if matched else [item]
        else:
            files.append(item)  # a missing file: its check says so
    return list(dict.fromkeys(files)), overrides, unmatched


def cmd_validate(args: argparse.Namespace) -> int:
    files, overrides, unmatched = _files_and_overrides(args.files)
    errors = [f"{pattern}: no file matches this pattern" for pattern in unmatched]
    if not files and not unmatched:
        errors.append("no YAML file given (only key=value overrides): name the files to check")
    failed = needing = 0
    override_errors: dict[str, list[str]] = {}  # one line per override error, naming the files
    for path in files:
        try:
            checked = check_file(Path(path), overrides)
        except (HarnessError, OSError) as err:
            failed += 1
            msg = str(err)
            if msg.startswith("override '"):  # the command line's, whatever file it is applied to
                override_errors.setdefault(msg, []).append(path)
            else:
                errors.append(msg if path in msg else f"{path}: {msg}")
            continue
        needing += bool(checked.needs)
        if not checked.needs:
            print(f"ok     {path}  ({checked.kind})")
        for need in checked.needs:
            print(f"needs  {path}  ({checked.kind}): {need}")
    errors += [f"{msg} (applied to {', '.join(paths)})" for msg, paths in override_errors.items()]
    for msg in errors:
        print(f"harness: error: {msg}", file=sys.stderr)
    if len(files) > 1 or needing:
        print(f"validate: {len(files)} files: {len(files) - needing - failed} ok, {needing} valid but "
              f"needing values (placeholders), {failed} with errors")
    if errors:
        return 2
    return 3 if needing and args.strict else 0


def cmd_ls(args: argparse.Namespace) -> int:
    regs = all_registries()
    wanted = args.what or list(regs)
    for name in wanted:
        if name not in regs:
            raise UserError(f"unknown registry {name!r}; choose from {', '.join(regs)}")
        reg = regs[name]
        print(f"{name} ({reg.kind}):")
        for item in reg.names():
            print(f"  {item}")
    return 0


def add_parser(sub: Subparsers) -> None:
    p = command(sub, "validate", cmd_validate, "check YAML configs (run configs, sweeps) strictly", [
        "harness validate sweeps/base/tiny.yaml",
        "harness validate sweeps/**/*.yaml                  # every shipped config",
        "harness validate 'sweeps/**/*.yaml'                # quoted: expanded here, ** spans folders",
        "harness validate sweeps/paper/*.yaml teacher.spec=s3prl:hubert:/data/hubert_base_ls960.pt",
        "harness validate sweeps/embedded/main.yaml train.steps=10 --strict",
    ])
    p.description = (
        "Check every file given (all of them, then every error on its own line: the file, the key, the fix). "
        "key=value arguments are overrides applied to every file, as `harness distill` and `harness sweep --set` "
        "apply them; an error they cause names the override. A value written <NAME> (the paper configs' "
        "teacher checkpoint) is a placeholder: the file is listed as valid but needing that value. Exit status: "
        "0 every file valid (placeholders listed), 2 any error, 3 with --strict when a placeholder is left.")
    p.add_argument("files", nargs="+", metavar="FILE_OR_KEY=VALUE",
                   help="YAML files or glob patterns (a quoted one is expanded here), and key=value overrides")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 3 when a file still holds a placeholder (default: list it, exit 0)")

    p = command(sub, "ls", cmd_ls, "list the registries (stacking variants, losses, tasks, teachers)",
                ["harness ls", "harness ls stacking"])
    p.add_argument("what", nargs="*", help="registry names (default: all)")
