#!/usr/bin/env python3
"""Self-test of the normalization filter: what it must forgive and what it must not hide.
Run: python3 scripts/pg-suite/test_normalize.py"""
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

RULES = report.load_rules(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'normalize.rules'), 'torii')


def same(a, b, test='t'):
    return report.normalize(a, test, RULES) == report.normalize(b, test, RULES)


def table(stmt, header, rows):
    sep = '-' * len(header)
    foot = '(1 row)' if len(rows) == 1 else f'({len(rows)} rows)'
    return '\n'.join([stmt, header, sep] + rows + [foot, '']) + '\n'


checks = []


def check(name, cond):
    checks.append((name, cond))


# unordered results: same multiset passes, anything else fails
q = 'SELECT a, b FROM t WHERE a > 0;'
h = ' a | b '
check('unordered: permutation forgiven',
      same(table(q, h, [' 1 | x', ' 2 | y']), table(q, h, [' 2 | y', ' 1 | x'])))
check('unordered: missing row not hidden',
      not same(table(q, h, [' 1 | x', ' 2 | y']), table(q, h, [' 2 | y', ' 2 | y'])))
check('unordered: changed value not hidden',
      not same(table(q, h, [' 1 | x', ' 2 | y']), table(q, h, [' 1 | x', ' 2 | z'])))
check('unordered: duplicate count matters',
      not same(table(q, h, [' 1 | x', ' 1 | x', ' 2 | y']), table(q, h, [' 1 | x', ' 2 | y', ' 2 | y'])))
qo = 'SELECT a, b FROM t\n  ORDER BY a;'
check('ORDER BY: wrong order not hidden',
      not same(table(qo, h, [' 1 | x', ' 2 | y']), table(qo, h, [' 2 | y', ' 1 | x'])))
qe = 'EXPLAIN (COSTS OFF) SELECT * FROM t;'
check('EXPLAIN: plan line order not hidden',
      not same(table(qe, ' QUERY PLAN ', [' Sort', '   ->  Seq Scan on t']),
               table(qe, ' QUERY PLAN ', ['   ->  Seq Scan on t', ' Sort'])))
check('previous statement ORDER BY does not leak',
      same('SELECT 1 ORDER BY 1;\n x \n---\n 1\n(1 row)\n\n' + table(q, h, [' 1 | x', ' 2 | y']),
           'SELECT 1 ORDER BY 1;\n x \n---\n 1\n(1 row)\n\n' + table(q, h, [' 2 | y', ' 1 | x'])))
iso = 'step s1: SELECT * FROM t;\n'
check('isolation step output: permutation forgiven',
      same(iso + 'a|b\n-+-\n1|x\n2|y\n(2 rows)\n', iso + 'a|b\n-+-\n2|y\n1|x\n(2 rows)\n'))
iso_wait = 'step s1: SELECT * FROM t ORDER BY a; <waiting ...>\nstep s2: COMMIT;\nstep s1: <... completed>\n'
check('isolation completed step with ORDER BY: wrong order not hidden',
      not same(iso_wait + 'a|b\n-+-\n1|x\n2|y\n(2 rows)\n', iso_wait + 'a|b\n-+-\n2|y\n1|x\n(2 rows)\n'))
iso_wait2 = iso_wait.replace(' ORDER BY a', '')
check('isolation completed step without ORDER BY: permutation forgiven',
      same(iso_wait2 + 'a|b\n-+-\n1|x\n2|y\n(2 rows)\n', iso_wait2 + 'a|b\n-+-\n2|y\n1|x\n(2 rows)\n'))

# ctid column masked, other columns still compared
qc = 'SELECT ctid, a FROM t;'
hc = ' ctid  | a '
check('ctid: different ctids forgiven',
      same(table(qc, hc, [' (0,1) | 1']), table(qc, hc, [' (3,17) | 1'])))
check('ctid: different values next to ctid not hidden',
      not same(table(qc, hc, [' (0,1) | 1']), table(qc, hc, [' (3,17) | 2'])))

# access-method specific rows
dep = 'SELECT obj, objref, deptype FROM dependency_listing;'
hd = ' obj | objref | deptype '
check('am dependency row forgiven in create_index',
      same(table(dep, hd, [' table t | schema public | n']),
           table(dep, hd, [' table t | access method torii | n', ' table t | schema public | n']), 'create_index'))
check('am dependency row not forgiven elsewhere',
      not same(table(dep, hd, [' table t | schema public | n']),
               table(dep, hd, [' table t | access method torii | n', ' table t | schema public | n']), 'other'))
check('Access method line', same('Access method: heap\n', 'Access method: torii\n'))
check('Access method heap2 not rewritten', not same('Access method: heap\n', 'Access method: heap2\n'))
check('explain estimates',
      same('Seq Scan on t  (cost=0.00..35.50 rows=2550 width=4)\n', 'Seq Scan on t  (cost=0.00..1.10 rows=10 width=4)\n'))
check('explain node type not hidden',
      not same('Seq Scan on t  (cost=0.00..35.50 rows=2550 width=4)\n', 'Index Scan on t  (cost=0.00..1.10 rows=10 width=4)\n'))

# extension-created access methods, as run.sh records them
EXT = report.load_rules(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'normalize.rules'), 'torii',
                        [('16390', 'torii_btree'), ('16385', 'torii')])


def same_ext(a, b, test):
    return report.normalize(a, test, EXT) == report.normalize(b, test, EXT)


qs = 'SELECT DISTINCT amopmethod, amopstrategy, oprname FROM pg_amop ORDER BY 1, 2, 3;'
hs = ' amopmethod | amopstrategy | oprname '
check('strategy listing: extension AM rows forgiven in opr_sanity',
      same_ext(table(qs, hs, ['        403 |            1 | <']),
               table(qs, hs, ['        403 |            1 | <', '      16390 |            1 | <']), 'opr_sanity'))
hv = ' amopmethod | oid '
check('other opr_sanity tables keep extension AM rows (violations stay visible)',
      not same_ext(table('SELECT amopmethod, oid FROM bad;', hv, ['        403 | 1']),
                   table('SELECT amopmethod, oid FROM bad;', hv, ['        403 | 1', '      16390 | 7']), 'opr_sanity'))
ha = ' amname |     prop      | p '
check('amutils: extension index AM rows forgiven',
      same_ext(table('SELECT ... ORDER BY amname;', ha, [' btree  | can_order     | t']),
               table('SELECT ... ORDER BY amname;', ha, [' btree  | can_order     | t', ' torii_btree | can_order | t']), 'amutils'))
check('amutils: other AM rows not forgiven',
      not same_ext(table('SELECT ... ORDER BY amname;', ha, [' btree  | can_order     | t']),
                   table('SELECT ... ORDER BY amname;', ha, [' btree  | can_order     | f']), 'amutils'))

bad = [n for n, ok in checks if not ok]
for n, ok in checks:
    print(('ok   ' if ok else 'FAIL ') + n)
sys.exit(1 if bad else 0)
