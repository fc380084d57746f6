-- Rows whose last change was rolled back: the next writer restores them from undo first.
-- (An aborted cold update leaves a moved stub whose data starts with the forwarding TID;
-- the lock-mode check of the next UPDATE once deformed that stub and crashed.)
CREATE TABLE ab_t (id int PRIMARY KEY, name text, note text, code int) USING torii;
CREATE INDEX ab_t_code ON ab_t (code);
INSERT INTO ab_t VALUES (1, 'p1', '', 1), (2, 'p2', 'two', 2);
UPDATE ab_t SET note = 'updated' WHERE id = 1;
-- an aborted key update (cold), then a non-key update of the same row
BEGIN;
UPDATE ab_t SET id = 100 WHERE id = 1;
ROLLBACK;
UPDATE ab_t SET note = 'x' WHERE id = 1;
SELECT * FROM ab_t ORDER BY id;
-- an aborted cold update, then a key update
BEGIN;
UPDATE ab_t SET code = 20 WHERE id = 2;
ROLLBACK;
UPDATE ab_t SET id = 200 WHERE id = 2;
SELECT * FROM ab_t ORDER BY id;
-- the same under a savepoint, then DELETE and SELECT FOR UPDATE of rolled-back rows
BEGIN;
SAVEPOINT s;
UPDATE ab_t SET id = 300, name = repeat('n', 50) WHERE id = 200;
ROLLBACK TO SAVEPOINT s;
SELECT id, name FROM ab_t WHERE id = 200 FOR UPDATE;
UPDATE ab_t SET name = 'after savepoint' WHERE id = 200;
COMMIT;
BEGIN;
UPDATE ab_t SET code = 30 WHERE id = 1;
ROLLBACK;
DELETE FROM ab_t WHERE id = 1;
SELECT * FROM ab_t ORDER BY id;
SELECT * FROM ab_t WHERE code = 2;
DROP TABLE ab_t;
