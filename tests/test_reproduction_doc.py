""" Every figure in docs/REPRODUCTION.md's tables comes from a committed result JSON (no hand-edited numbers). """
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r'(?<![\w.])\d+\.\d+(?![\w.])')


def _json_numbers(value, out):
    if isinstance(value, dict):
        for v in value.values():
            _json_numbers(v, out)
    elif isinstance(value, list):
        for v in value:
            _json_numbers(v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out.update({str(value), f'{value:.1f}', f'{value:.2f}'})
    return out


def test_tables_only_hold_numbers_from_the_result_files():
    lines = (REPO / 'docs' / 'REPRODUCTION.md').read_text().splitlines()
    # table body rows only: a header row (the line above |---|) holds labels such as 'ε=0.01'
    headers = {i - 1 for i, line in enumerate(lines) if line.startswith('|---') or line.startswith('| ---')}
    table_numbers = {n for i, line in enumerate(lines) if line.startswith('|') and i not in headers
                     and not line.startswith('|---') for n in NUMBER.findall(line)}
    results = list((REPO / 'reproduction').glob('**/results-*.json'))
    assert results, 'no committed reproduction results'
    known = set()
    for path in results:
        _json_numbers(json.loads(path.read_text()), known)
    assert table_numbers, 'docs/REPRODUCTION.md has no tables'
    missing = sorted(table_numbers - known, key=float)
    assert not missing, f'numbers in docs/REPRODUCTION.md tables that no result JSON holds: {missing}'
