"""The ``kdtoolbox`` command: ``plugins list``, ``plugins doctor``, ``export-student``."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def _plugins_list(args) -> int:
    from .plugins import format_plugin_table, load_plugins
    print(format_plugin_table(load_plugins(strict=False)))
    return 0


def _plugins_doctor(args) -> int:
    from .plugins import load_plugins, plugin_failures
    plugins = load_plugins(strict=False)
    failed = plugin_failures()
    print(f'{len(plugins)} plugin(s) found, {len(failed)} failed, '
          f'{sum(p.status == "disabled" for p in plugins.values())} disabled')
    for info in failed:
        print(f'\n{info.describe()}\n{info.details or ""}'.rstrip())
    return 1 if failed else 0


def _export(args) -> int:
    from .engine.export import export_student
    written = export_student(args.checkpoint, args.out, args.config)
    for what, path in written.items():
        print(f'wrote {what}: {path}')
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='kdtoolbox', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)
    plugins = sub.add_parser('plugins', help='inspect installed plugins')
    psub = plugins.add_subparsers(dest='plugins_command', required=True)
    psub.add_parser('list', help='each plugin with its package, version and components').set_defaults(func=_plugins_list)
    psub.add_parser('doctor', help='plugins that failed to load, with causes').set_defaults(func=_plugins_doctor)
    exp = sub.add_parser('export-student', help='write a plain mmdet/mmdet3d checkpoint of the student')
    exp.add_argument('checkpoint', help='a DistillationModel checkpoint')
    exp.add_argument('out', help='the student checkpoint to write (.pth)')
    exp.add_argument('--config', help='the distillation config: also write the student config next to OUT')
    exp.set_defaults(func=_export)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
