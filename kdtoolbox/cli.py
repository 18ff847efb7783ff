"""The ``kdtoolbox`` command: ``plugins list``, ``plugins doctor``, ``export-student``, ``visualize``, ``benchmark``.

Each subcommand is one ``_add_<name>(sub)`` function that declares its arguments and sets ``func``
(a function ``args -> exit code``); :func:`build_parser` calls them in order. A new subcommand
(e.g. ``benchmark``) adds one such function and one line there.
"""
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


def _visualize(args) -> int:
    from .visualize import visualize
    entries = visualize(args.config, args.image, args.out, teacher_checkpoint=args.teacher_checkpoint,
                        checkpoint=args.checkpoint, ann=args.ann, index=args.index, cfg_options=args.cfg_options,
                        split=args.split, seed=args.seed)
    print(f'wrote {len(entries)} map(s) to {args.out} (index.html, index.json)')
    return 0


def _add_plugins(sub) -> None:
    plugins = sub.add_parser('plugins', help='inspect installed plugins')
    psub = plugins.add_subparsers(dest='plugins_command', required=True)
    psub.add_parser('list', help='each plugin with its package, version and components').set_defaults(func=_plugins_list)
    psub.add_parser('doctor', help='plugins that failed to load, with causes').set_defaults(func=_plugins_doctor)


def _add_export(sub) -> None:
    exp = sub.add_parser('export-student', help='write a plain mmdet/mmdet3d checkpoint of the student')
    exp.add_argument('checkpoint', help='a DistillationModel checkpoint')
    exp.add_argument('out', help='the student checkpoint to write (.pth)')
    exp.add_argument('--config', help='the distillation config: also write the student config next to OUT')
    exp.set_defaults(func=_export)


def _add_visualize(sub) -> None:
    from mmengine.config import DictAction
    vis = sub.add_parser('visualize', help="draw a distiller's masks and attention maps for one image (PNGs)")
    vis.add_argument('config', help='a distillation config')
    vis.add_argument('image', nargs='?', help='an image file (or use --index)')
    vis.add_argument('--out', required=True, help='the folder to write the PNGs, index.json and index.html to')
    vis.add_argument('--ann', help="a COCO json with the image's boxes (default: the config's train annotations)")
    vis.add_argument('--index', type=int, help='use item N of a data set instead of an image (BEV inputs)')
    vis.add_argument('--split', choices=('train', 'val', 'test'), default='train',
                     help="--index's data set: 'train' (its pipeline, seeded augmentation) or 'val'/'test' "
                          '(the test pipeline with the GT boxes, no augmentation)')
    vis.add_argument('--seed', type=int, default=0, help="the augmentation seed of --split train")
    vis.add_argument('--teacher-checkpoint', help="override model.teacher_checkpoint ('none': random teacher)")
    vis.add_argument('--checkpoint', help='a training checkpoint (or work dir): its student and distiller weights')
    vis.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys')
    vis.set_defaults(func=_visualize)


def _benchmark(args) -> int:
    from .engine.benchmark import main as benchmark_main
    benchmark_main(args.benchmark_args, prog='kdtoolbox benchmark')
    return 0


def _add_benchmark(sub) -> None:
    # the arguments are the benchmark's own (tools/benchmark.py --help): passed through unparsed
    bench = sub.add_parser('benchmark', add_help=False,
                           help='time student step, lower bound and distillation step of a config')
    bench.add_argument('benchmark_args', nargs=argparse.REMAINDER)
    bench.set_defaults(func=_benchmark)


#: the subcommands, in the order ``kdtoolbox --help`` lists them
SUBCOMMANDS = (_add_plugins, _add_export, _add_visualize, _add_benchmark)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='kdtoolbox', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['benchmark']:  # its options (--help included) are the benchmark's own
        return _benchmark(argparse.Namespace(benchmark_args=argv[1:]))
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
