#!/usr/bin/env python3
"""Report for scripts/pg-suite/run.sh: per-test heap/torii verdicts, normalization of torii
failures (normalize.rules), crash scan of the server log, baseline check and exit status.

Verdicts for a test on torii:
  ok     pg_regress reported ok (exact match with an expected file)
  ok*    pg_regress reported FAILED, but the result equals an expected file once both are
         normalized with normalize.rules
  =heap  the result equals (normalized) the heap run's result for the same test, which itself
         did not match the expected file (a failure of this setup, not of the storage)
  FAIL   none of the above
  -      not run (timeout, torii run skipped, quick subset)
"""
import argparse
import configparser
import os
import re
import subprocess
import sys

STATUS_RE = re.compile(r'^(?:test\s+|\s+)(\S+)\s+\.\.\.\s+(ok|FAILED|failed \(ignored\))(?=\s|$)(.*)$')
SEP_RE = re.compile(r'^-+(\+-+)*$')
FOOT_RE = re.compile(r'^\((\d+) rows?\)$')
ORDER_BY_RE = re.compile(r'\border\s+by\b', re.I)
EXPLAIN_RE = re.compile(r'^\s*explain\b', re.I)


# ------------------------------------------------------------------ rules
NEVER = r'(?!)'  # a regex that matches nothing


def expand(pattern, am, ext_ams):
    """{am}: the AM under test; {ext_am_names}/{ext_am_oids}: alternations of the access methods
    (names / OIDs in this suite's database) that the extension creates, plus {am}."""
    names = sorted({am} | {n for _, n in ext_ams})
    oids = sorted({o for o, _ in ext_ams})
    return (pattern.replace('{am}', re.escape(am))
            .replace('{ext_am_names}', '|'.join(re.escape(n) for n in names) or NEVER)
            .replace('{ext_am_oids}', '|'.join(oids) or NEVER))


class Rule:
    def __init__(self, name, sec, am, ext_ams=()):
        self.name = name
        self.kind = sec.get('kind', '').strip()
        self.why = sec.get('why', '').strip()
        self.tests = set(sec.get('tests', '').split())
        self.pattern = sec.get('pattern')
        if self.pattern:
            self.pattern = expand(self.pattern, am, ext_ams)
        self.replace = sec.get('replace', '').replace('{am}', am)
        # header: only result tables whose header line matches this regex (drop-row, mask-column)
        self.header = sec.get('header')
        self.header_rx = re.compile(expand(self.header.strip(), am, ext_ams)) if self.header else None
        if self.kind not in ('sub', 'unordered', 'mask-column', 'drop-row'):
            raise SystemExit(f'normalize.rules: [{name}] unknown kind {self.kind!r}')
        if not self.why:
            raise SystemExit(f'normalize.rules: [{name}] has no "why"')
        if self.kind in ('sub', 'mask-column', 'drop-row'):
            if not self.pattern:
                raise SystemExit(f'normalize.rules: [{name}] needs a pattern')
            self.rx = re.compile(self.pattern.strip())

    def applies(self, test):
        return not self.tests or test in self.tests


def load_rules(path, am, ext_ams=()):
    cp = configparser.ConfigParser(interpolation=None, delimiters=('=',), comment_prefixes=('#',))
    cp.optionxform = str
    with open(path) as f:
        cp.read_file(f)
    return [Rule(n, cp[n], am, ext_ams) for n in cp.sections()]


def read_ext_ams(path):
    """Lines "oid name" written by run.sh after CREATE EXTENSION."""
    out = []
    for line in (read(path) or '').splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            out.append((parts[0], parts[1]))
    return out


def find_tables(lines):
    """Yield (header_idx, first_row_idx, footer_idx) of psql result tables whose row-line count
    equals the footer's row count (so no multi-line cells)."""
    i, n = 0, len(lines)
    while i < n - 1:
        if lines[i].strip() and SEP_RE.match(lines[i + 1]):
            j = i + 2
            while j < n and not FOOT_RE.match(lines[j]):
                if SEP_RE.match(lines[j]) and j + 1 < n and lines[j - 1].strip():
                    break  # another table header before a footer: not a table
                j += 1
            if j < n and FOOT_RE.match(lines[j]) and int(FOOT_RE.match(lines[j]).group(1)) == j - (i + 2):
                yield i, i + 2, j
                i = j + 1
                continue
        i += 1


def statement_before(lines, start, header):
    """The echoed statement that produced the table at `header` (psql -a / isolationtester)."""
    area = lines[start:header]
    steps = [k for k, l in enumerate(area) if l.startswith('step ')]
    if steps:
        stmt = area[steps[-1]:]
        m = re.match(r'^step (\S+): <\.\.\. completed>', stmt[0])
        if m:
            # the query text was printed when the step was started
            want = f'step {m.group(1)}: '
            for k in range(start + steps[-1] - 1, -1, -1):
                if lines[k].startswith(want) and '<... completed>' not in lines[k]:
                    end = k + 1
                    while end < len(lines) and not lines[end].startswith('step ') \
                            and not SEP_RE.match(lines[end]):
                        end += 1
                    return '\n'.join(lines[k:end])
            return None
        return '\n'.join(stmt)
    ends = [k for k, l in enumerate(area) if l.rstrip().endswith(';')]
    if not ends:
        return None
    last = ends[-1]
    prev = ends[-2] if len(ends) > 1 else -1
    return '\n'.join(area[prev + 1:last + 1])


def first_code_line(stmt):
    for l in stmt.splitlines():
        s = l.strip()
        if s and not s.startswith('--'):
            return s
    return ''


def apply_unordered(lines):
    out = list(lines)
    prev_end = 0
    for h, r0, f in list(find_tables(out)):
        stmt = statement_before(out, prev_end, h)
        prev_end = f + 1
        if stmt is None or ORDER_BY_RE.search(stmt):
            continue
        code = first_code_line(stmt)
        if code.startswith('\\') or EXPLAIN_RE.match(re.sub(r'^step \S+:\s*', '', code)):
            continue
        if out[h].strip() == 'QUERY PLAN':
            continue
        out[r0:f] = sorted(out[r0:f])
    return out


def apply_mask_column(lines, rule):
    out = list(lines)
    for h, r0, f in list(find_tables(out)):
        if rule.header_rx is not None and not rule.header_rx.search(out[h]):
            continue
        cols = [c.strip() for c in out[h].split('|')]
        idx = [k for k, c in enumerate(cols) if rule.rx.search(c)]
        if not idx:
            continue
        # Re-render the table without padding, so masked values cannot change column widths.
        out[h] = '|'.join(cols)
        out[h + 1] = '-'
        for r in range(r0, f):
            cells = [c.strip() for c in out[r].split('|')]
            if len(cells) == len(cols):
                for k in idx:
                    cells[k] = rule.replace
            out[r] = '|'.join(cells)
    return out


def unpad(line):
    return '|'.join(c.strip() for c in line.split('|'))


def apply_drop_row(lines, rule):
    """Delete result rows matching the pattern, fix the row count, and re-render every table
    without padding (column widths depend on the rows present)."""
    out = []
    pos = 0
    for h, r0, f in list(find_tables(lines)):
        out.extend(lines[pos:h])
        if h > pos and out[-1].startswith(' '):
            out[-1] = out[-1].strip()  # a \d-style title, centred over the table's width
        drop = rule.header_rx is None or rule.header_rx.search(lines[h])
        rows = [unpad(r) for r in lines[r0:f] if not (drop and rule.rx.search(r))]
        out.append(unpad(lines[h]))
        out.append('-')
        out.extend(rows)
        out.append('(1 row)' if len(rows) == 1 else f'({len(rows)} rows)')
        pos = f + 1
    out.extend(lines[pos:])
    return out


def normalize(text, test, rules, used=None):
    lines = text.split('\n')
    for rule in rules:
        if not rule.applies(test):
            continue
        before = lines
        if rule.kind == 'sub':
            lines = [rule.rx.sub(rule.replace, l) for l in lines]
        elif rule.kind == 'unordered':
            lines = apply_unordered(lines)
        elif rule.kind == 'mask-column':
            lines = apply_mask_column(lines, rule)
        elif rule.kind == 'drop-row':
            lines = apply_drop_row(lines, rule)
        if used is not None and lines != before:
            used.add(rule.name)
    return '\n'.join(lines)


# ------------------------------------------------------------------ results
def read(path):
    try:
        with open(path, errors='replace') as f:
            return f.read()
    except FileNotFoundError:
        return None


EXITED = {}  # (stdout_path, test) -> "exit code 2" etc. when psql itself died


def parse_status(stdout_path):
    """Ordered dict test -> 'ok' | 'FAILED' from pg_regress's stdout."""
    res = {}
    text = read(stdout_path)
    if text is None:
        return res
    for line in text.splitlines():
        m = STATUS_RE.match(line)
        if m:
            res[m.group(1)] = 'ok' if m.group(2).startswith('ok') else 'FAILED'
            x = re.search(r'\((?:test process )?(exited with exit code \d+|was terminated[^)]*|timed out after \d+s)\)',
                          m.group(3))
            if x:
                EXITED[(stdout_path, m.group(1))] = x.group(1)
    return res


def expected_files(expdir, test):
    files = []
    base = os.path.join(expdir, test + '.out')
    if os.path.exists(base):
        files.append(base)
    for i in range(10):
        p = os.path.join(expdir, f'{test}_{i}.out')
        if os.path.exists(p):
            files.append(p)
    return files


def diff_lines(a_text, b_text, a_label, b_label, tmpdir):
    os.makedirs(tmpdir, exist_ok=True)
    pa, pb = os.path.join(tmpdir, 'a'), os.path.join(tmpdir, 'b')
    with open(pa, 'w') as f:
        f.write(a_text)
    with open(pb, 'w') as f:
        f.write(b_text)
    p = subprocess.run(['diff', '-U3', '--label', a_label, '--label', b_label, pa, pb],
                       capture_output=True, text=True, errors='replace')
    return p.stdout


def needed_rules(a, b, test, rules, used):
    """The rules among `used` without which a and b would no longer compare equal."""
    keep = list(rules)
    for name in sorted(used):
        trial = [r for r in keep if r.name != name]
        if normalize(a, test, trial) == normalize(b, test, trial):
            keep = trial
    return {r.name for r in keep} & used


def judge_torii(test, suite, work, rules, heap_status):
    """Return (verdict, rules_used, diff_text) for a test pg_regress reported FAILED on torii."""
    indir = os.path.join(work, suite)
    res_path = os.path.join(work, 'out', 'torii', suite, 'results', test + '.out')
    res = read(res_path)
    if res is None:
        return 'FAIL', set(), f'(no result file {res_path})\n'
    used = set()
    nres = normalize(res, test, rules, used)
    best = None
    for exp_path in expected_files(os.path.join(indir, 'expected'), test):
        u = set()
        nexp = normalize(read(exp_path), test, rules, u)
        if nexp == nres:
            return 'ok*', needed_rules(res, read(exp_path), test, rules, used | u), ''
        d = diff_lines(nexp, nres, 'expected/' + os.path.basename(exp_path) + ' (normalized)',
                       'results/' + test + '.out (normalized)', os.path.join(work, 'tmp'))
        if best is None or d.count('\n') < best.count('\n'):
            best = d
    if heap_status == 'FAILED':
        heap = read(os.path.join(work, 'out', 'heap', suite, 'results', test + '.out'))
        if heap is not None:
            u = set()
            if normalize(heap, test, rules, u) == nres:
                return '=heap', used | u, ''
    return 'FAIL', used, best or ''


# ------------------------------------------------------------------ crashes
LOG_RE = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \S+ \[(\d+)\] (.*?)\s*'
                    r'(LOG|ERROR|FATAL|PANIC|WARNING|DETAIL|STATEMENT|HINT|CONTEXT|NOTICE|INFO|DEBUG\d?):\s+(.*)$')
TERM_RE = re.compile(r'\(PID (\d+)\) was terminated by signal (\d+)(?::\s*(.*))?')
APPNAME_RE = re.compile(r'application_name=(\S+)')


def test_of_app(app):
    # pg_regress/<test>, isolation/<test>[/<session>]
    parts = app.split('/')
    if len(parts) >= 2 and parts[0] in ('pg_regress', 'isolation'):
        return parts[1]
    return None


def scan_crashes(log_path):
    """List of (test or '?', description)."""
    text = read(log_path)
    if text is None:
        return []
    pid_test = {}
    events = []
    lines = text.splitlines()
    for k, line in enumerate(lines):
        m = LOG_RE.match(line)
        if not m:
            continue
        pid, app, level, msg = m.groups()
        t = test_of_app(app)
        if t is None:
            am = APPNAME_RE.search(msg)
            if am:
                t = test_of_app(am.group(1))
        if t and pid not in pid_test:
            pid_test[pid] = t
        if level == 'PANIC':
            events.append(('PANIC', pid, msg, t))
        tm = TERM_RE.search(msg)
        if tm:
            detail = ''
            if k + 1 < len(lines) and 'Failed process was running:' in lines[k + 1]:
                detail = lines[k + 1].split('Failed process was running:', 1)[1].strip()
            events.append(('signal', tm.group(1), f'signal {tm.group(2)} {tm.group(3) or ""}'.strip()
                           + (f' while running: {detail[:200]}' if detail else ''), None))
    out = []
    for kind, pid, msg, t in events:
        t = t or pid_test.get(pid) or '?'
        out.append((t, f'{kind} (pid {pid}): {msg}'))
    return out


def read_list(path):
    items = []
    text = read(path)
    if text is None:
        return items
    for line in text.splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            items.append(line)
    return items


# ------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--work', required=True)
    ap.add_argument('--rules', required=True)
    ap.add_argument('--am', default='torii')
    ap.add_argument('--baseline', required=True)
    ap.add_argument('--known-crashes', required=True)
    ap.add_argument('--sides', default='heap torii')
    ap.add_argument('--suites', default='regress isolation')
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--write-baseline', action='store_true')
    ap.add_argument('--baseline-note', default='')
    ap.add_argument('--torii-skipped', action='store_true')
    a = ap.parse_args()

    load_rules(a.rules, a.am)  # validate early
    sides = a.sides.split()
    suites = a.suites.split()
    work = a.work
    fail_exit = False
    lines_out = []

    def p(s=''):
        print(s)
        lines_out.append(s)

    torii_passes = []
    all_crashes = []
    totals = {}
    for suite in suites:
        heap = parse_status(os.path.join(work, 'out', 'heap', suite, 'stdout.txt'))
        torii = parse_status(os.path.join(work, 'out', 'torii', suite, 'stdout.txt'))
        tests = list(heap) + [t for t in torii if t not in heap]
        p(f'== {suite}: {len(tests)} tests')
        p(f'   {"test":34s} {"heap":6s} {"torii":6s} note')
        rules = load_rules(a.rules, a.am, read_ext_ams(os.path.join(work, 'out', 'torii', suite, 'ext-ams.txt')))
        verdicts = {}
        crashes = {side: scan_crashes(os.path.join(work, 'logs', f'{side}-{suite}.log')) for side in sides}
        torii_crashed = bool(crashes.get('torii'))
        difdir = os.path.join(work, 'diffs', 'torii', suite)
        for t in tests:
            h = heap.get(t, '-') if 'heap' in sides else '-'
            tr = torii.get(t)
            note = ''
            if tr is None:
                v = '-'
            elif tr == 'ok':
                v = 'ok'
            else:
                v, used, d = judge_torii(t, suite, work, rules, h)
                if v == 'ok*':
                    note = 'rules: ' + ','.join(sorted(used))
                elif v == '=heap':
                    note = "same output as heap's (failing) run"
                if d:
                    os.makedirs(difdir, exist_ok=True)
                    with open(os.path.join(difdir, t + '.diff'), 'w') as f:
                        f.write(d)
            verdicts[t] = v
            if v in ('ok', 'ok*', '=heap'):
                torii_passes.append(f'{suite}/{t}')
            if v == 'FAIL' and h == 'ok':
                note = ('TORII-ONLY FAILURE ' + note).strip()
            ex = EXITED.get((os.path.join(work, 'out', 'torii', suite, 'stdout.txt'), t))
            if ex and v == 'FAIL':
                if ex.startswith('timed out'):
                    note += f' ({ex}: hang)'
                else:
                    note += f' (test process {ex}' + ('; the server crashed during this suite' if torii_crashed else '') + ')'

            hv = {'ok': 'ok', 'FAILED': 'FAIL'}.get(h, h)
            p(f'   {t:34s} {hv:6s} {v:6s} {note}'.rstrip())
        hn = sum(1 for t in tests if heap.get(t) == 'ok')
        hf = sum(1 for t in tests if heap.get(t) == 'FAILED')
        tn = {k: sum(1 for v in verdicts.values() if v == k) for k in ('ok', 'ok*', '=heap', 'FAIL', '-')}
        only = [t for t in tests if verdicts.get(t) == 'FAIL' and heap.get(t) == 'ok']
        totals[suite] = (hn, hf, tn, only)
        p(f'-- {suite} totals: heap {hn} ok / {hf} failed'
          + ('' if 'torii' not in sides or a.torii_skipped else
             f'; torii {tn["ok"]} ok + {tn["ok*"]} ok* + {tn["=heap"]} =heap, {tn["FAIL"]} failed, {tn["-"]} not run'
             f'; torii-only failures: {len(only)}'))
        if heap:
            hfl = [t for t in tests if heap.get(t) == 'FAILED']
            p(f'   heap failures: {" ".join(hfl) if hfl else "none"}')
        if only:
            p(f'   torii-only failures: {" ".join(only)}')
        p()

        for side in sides:
            for t, desc in crashes[side]:
                all_crashes.append((side, suite, t, desc))
        for side in sides:
            err = read(os.path.join(work, 'out', side, suite, 'stderr.txt')) or ''
            for line in err.splitlines():
                if line.startswith(('HANG:', 'UNKILLABLE:')):
                    p(f'!! {side} {suite}: {line}')
            if 'TIMEOUT' in err:
                p(f'!! {side} {suite}: the phase ran out of time (PG_SUITE_PHASE_TIMEOUT); later tests were not run')
                fail_exit = True

    # crashes
    known = set(read_list(a.known_crashes))
    if all_crashes:
        p('== crashes found in the server log')
        for side, suite, t, desc in all_crashes:
            key = f'{side} {suite}/{t}'
            tag = 'known' if key in known else 'NEW'
            if tag == 'NEW':
                fail_exit = True
            p(f'   [{tag}] {key}: {desc}')
        p()
    else:
        p('== no crashes (no "terminated by signal" / PANIC in the server log)')

    # baseline
    if 'torii' in sides and not a.torii_skipped:
        baseline = read_list(a.baseline)
        ran = set()
        for suite in suites:
            for t in parse_status(os.path.join(work, 'out', 'torii', suite, 'stdout.txt')):
                ran.add(f'{suite}/{t}')
        passes = set(torii_passes)
        if a.write_baseline:
            with open(a.baseline, 'w') as f:
                f.write('# Tests torii is known to pass (ok, ok* or =heap); written by run.sh --write-baseline.\n')
                f.write('# run.sh exits non-zero if any of these fails on torii.\n')
                if a.baseline_note:
                    f.write(f'# {a.baseline_note}\n')
                for t in sorted(passes):
                    f.write(t + '\n')
            p(f'== wrote baseline {a.baseline}: {len(passes)} tests')
        else:
            regressions = [t for t in baseline if t.split('/')[0] in suites
                           and (t not in passes) and (t in ran or not a.quick)]
            new = sorted(passes - set(baseline))
            if regressions:
                fail_exit = True
                p(f'== BASELINE REGRESSIONS ({len(regressions)}): tests in baseline-torii.txt that failed (or did not run) on torii')
                for t in regressions:
                    p(f'   {t}')
            else:
                p(f'== baseline: all {sum(1 for t in baseline if t in ran)} baseline tests that ran still pass on torii')
            if new:
                p(f'== NEW torii passes not in the baseline ({len(new)}); refresh with --write-baseline:')
                p('   ' + ' '.join(new))
    with open(os.path.join(work, 'report.txt'), 'w') as f:
        f.write('\n'.join(lines_out) + '\n')
    sys.exit(1 if fail_exit else 0)


if __name__ == '__main__':
    main()
