-- First steps with a torii table. The database already has CREATE EXTENSION torii.
CREATE TABLE basic_t (id int, name text, amount numeric(10,2), created date) USING torii;
INSERT INTO basic_t VALUES
    (1, 'one', 1.50, '2024-01-01'),
    (2, 'two', NULL, '2024-01-02'),
    (3, NULL, 3.00, NULL);
INSERT INTO basic_t
    SELECT g, 'row ' || g, g * 1.25, date '2024-01-01' + g FROM generate_series(4, 1000) g;
SELECT * FROM basic_t ORDER BY id LIMIT 5;
SELECT count(*), sum(id), sum(amount), count(name), count(amount), count(created) FROM basic_t;
-- NULLs
SELECT * FROM basic_t WHERE name IS NULL OR amount IS NULL OR created IS NULL ORDER BY id;
SELECT count(*) FROM basic_t WHERE amount IS NOT NULL AND name IS NOT NULL;
-- a text value with quotes, non-ASCII letters and a newline
INSERT INTO basic_t VALUES (1001, E'It''s a "text" value, ünïcödé 日本\nsecond line', 0, '2024-12-31');
SELECT id, name, length(name), octet_length(name) FROM basic_t WHERE id = 1001;
-- a long value (TOASTed)
INSERT INTO basic_t VALUES (1002, repeat('torii ', 10000), 0, NULL);
SELECT id, length(name), md5(name) = md5(repeat('torii ', 10000)) AS same FROM basic_t WHERE id = 1002;
-- rollback
BEGIN;
INSERT INTO basic_t SELECT g, 'rolled back', 0, NULL FROM generate_series(2000, 2999) g;
SELECT count(*) FROM basic_t;
ROLLBACK;
SELECT count(*) FROM basic_t;
SELECT count(*) FROM basic_t WHERE name = 'rolled back';
-- a savepoint rolled back inside a committed transaction
BEGIN;
INSERT INTO basic_t VALUES (3000, 'kept', 1, NULL);
SAVEPOINT sp;
INSERT INTO basic_t VALUES (3001, 'gone', 1, NULL);
ROLLBACK TO SAVEPOINT sp;
COMMIT;
SELECT id, name FROM basic_t WHERE id >= 3000 ORDER BY id;
-- ordered output
SELECT id, name, amount, created FROM basic_t WHERE id % 100 = 0 ORDER BY id DESC;
SELECT count(*) FROM basic_t;
DROP TABLE basic_t;
