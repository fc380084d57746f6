-- Errors raised by user code while torii builds an index keep their CONTEXT lines (the
-- build's per-row calls run in C, see src/am/index_shim.c), and the session goes on.
CREATE TABLE ix_t (i int PRIMARY KEY, a int) USING torii;
INSERT INTO ix_t SELECT g, g % 3 FROM generate_series(1, 10) g;
CREATE FUNCTION ix_inv(x int) RETURNS int IMMUTABLE LANGUAGE plpgsql
  AS 'BEGIN RETURN 1 / x; END';
-- an index expression
CREATE INDEX ix_t_expr ON ix_t (ix_inv(a));
-- a partial index's predicate
CREATE INDEX ix_t_pred ON ix_t (i) WHERE ix_inv(a) > 0;
-- the rebuild of VACUUM FULL, through two SQL functions (as PostgreSQL's vacuum test)
CREATE FUNCTION ix_analyze() RETURNS void VOLATILE LANGUAGE SQL AS 'ANALYZE pg_am';
CREATE FUNCTION ix_wrap(c int) RETURNS int IMMUTABLE LANGUAGE SQL
  AS 'SELECT $1 FROM public.ix_analyze()';
CREATE INDEX ix_t_wrap ON ix_t (ix_wrap(i));
VACUUM FULL ix_t;
-- the session and the table are fine afterwards
SELECT count(*), sum(a) FROM ix_t;
DROP TABLE ix_t;
DROP FUNCTION ix_wrap(int);
DROP FUNCTION ix_analyze();
DROP FUNCTION ix_inv(int);

-- RETURNING sees the system columns heap gives a row just written: xmin is the writer,
-- xmax none, cmin the command.
CREATE TABLE sc_t (id int PRIMARY KEY, v text) USING torii;
BEGIN;
INSERT INTO sc_t VALUES (1, 'a')
  RETURNING xmin = pg_current_xact_id()::xid AS xmin_ok, xmax, cmin;
UPDATE sc_t SET v = 'b'
  RETURNING xmin = pg_current_xact_id()::xid AS xmin_ok, xmax, cmin;
INSERT INTO sc_t VALUES (2, 'c'), (3, 'd')
  RETURNING id, xmin = pg_current_xact_id()::xid AS xmin_ok, xmax, cmin;
COMMIT;
SELECT id, v, xmin = (SELECT xmin FROM sc_t WHERE id = 1) AS same_writer FROM sc_t ORDER BY id;
DROP TABLE sc_t;
