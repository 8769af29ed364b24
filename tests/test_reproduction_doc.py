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


def _verdict_files():
    return sorted((REPO / 'reproduction').glob('**/verdicts-*.json'))


def test_committed_verdicts_follow_from_the_committed_results():
    import sys
    sys.path.insert(0, str(REPO / 'scripts'))
    import verdicts
    assert _verdict_files(), 'no committed verdicts'
    for path in _verdict_files():
        committed = json.loads(path.read_text())
        record = json.loads(path.with_name(path.name.replace('verdicts-', 'results-')).read_text())
        recomputed = verdicts.table_verdicts(record)
        for claim, value in recomputed.items():
            if claim != 'gate':
                assert committed[claim]['verdict'] == value['verdict'], (path.name, claim)
        second = f'second reading: {verdicts.SECOND_READING}'
        if second in committed:
            for claim, value in verdicts.verdicts(record, attack=verdicts.SECOND_READING).items():
                if claim != 'gate':
                    assert committed[second][claim]['verdict'] == value['verdict'], (path.name, second, claim)


VERDICT_BULLET = re.compile(r'^\* \*\*(C\d), [^*]*?: (not reproduced|reproduced|inconclusive)')


def test_doc_states_the_committed_verdicts():
    """ The bold verdict of each claim bullet in the doc is the one in the verdicts file it cites. """
    doc = (REPO / 'docs' / 'REPRODUCTION.md').read_text()
    for path in _verdict_files():
        if path.name not in doc:
            continue
        stated = dict(m.groups() for m in map(VERDICT_BULLET.match, doc.splitlines()) if m)
        for claim, value in json.loads(path.read_text()).items():
            if claim[:2] in ('C1', 'C2', 'C3'):
                assert claim[:2] in stated, f'{claim} has no verdict bullet in docs/REPRODUCTION.md'
                assert value['verdict'].startswith(stated[claim[:2]]), (claim, value['verdict'], stated[claim[:2]])
