""" ``python -m timm_normplugins train|evaluate|predict ...``: the installed recipes. """
import sys

_USAGE = 'usage: python -m timm_normplugins {train,evaluate,predict} [flags]   (--help after the command lists them)'


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in ('train', 'evaluate', 'predict'):
        print(_USAGE, file=sys.stderr)
        return 0 if argv and argv[0] in ('-h', '--help') else 2
    command, rest = argv[0], argv[1:]
    sys.argv = [f'timm_normplugins {command}', *rest]
    if command == 'train':
        from .cli.train import cli
        return cli(rest)
    if command == 'predict':
        from .cli.predict import main as predict
        return predict(rest)
    from .cli.evaluate import main as evaluate
    evaluate(rest)
    return 0


if __name__ == '__main__':
    sys.exit(main())
