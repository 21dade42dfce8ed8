-- SPDX-License-Identifier: GPL-2.0-or-later
-- An SQL workload for `sqlite3 :memory: < sqlite.sql` (or a temporary file
-- database): inserts through a recursive CTE, an index, GROUP BY and a join.
-- Every result is ordered, and the "random" columns are arithmetic on the row
-- number, so the output is the same on every run and every malloc.
--
-- The row count is @rows, 200000 unless the parameter is set first, e.g.
--   (echo '.parameter set @rows 20000'; cat sqlite.sql) | sqlite3 :memory:
.bail on
.headers off
.mode list

CREATE TABLE item(
  id INTEGER PRIMARY KEY,
  grp INTEGER NOT NULL,
  name TEXT NOT NULL,
  size INTEGER NOT NULL,
  payload BLOB NOT NULL
);
CREATE TABLE grp(id INTEGER PRIMARY KEY, label TEXT NOT NULL);

WITH RECURSIVE n(i) AS (
  SELECT 1
  UNION ALL
  SELECT i + 1 FROM n WHERE i < coalesce(@rows, 200000)
)
INSERT INTO item(id, grp, name, size, payload)
SELECT i,
       (i * 2654435761) % 997,
       'obj-' || ((i * 40503) % 65521) || '-' || substr('abcdefghijklmnopqrstuvwxyz', 1 + i % 26, 1 + (i * 7) % 20),
       8 << ((i * 31) % 10),
       zeroblob(16 + (i * 13) % 240)
FROM n;

WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < 996)
INSERT INTO grp(id, label) SELECT i, 'group-' || printf('%04d', i) FROM g;

CREATE INDEX item_name ON item(name);
CREATE INDEX item_grp_size ON item(grp, size);

SELECT 'rows', count(*), sum(size), sum(length(payload)) FROM item;

-- Group by with an aggregate over a string built per row.
SELECT 'by size', size, count(*), min(name), max(name)
FROM item GROUP BY size ORDER BY size;

-- A join of every item to its group, grouped, the heaviest groups first.
SELECT 'heavy', g.label, count(*), sum(i.size)
FROM item AS i JOIN grp AS g ON g.id = i.grp
GROUP BY g.id ORDER BY sum(i.size) DESC, g.id LIMIT 5;

-- Index lookups: a range on the name index and a self-join on it.
SELECT 'names', count(*) FROM item WHERE name BETWEEN 'obj-1' AND 'obj-2';
SELECT 'pairs', count(*), sum(b.id - a.id)
FROM item AS a JOIN item AS b
  ON b.grp = a.grp AND b.size = a.size AND b.id > a.id AND b.id < a.id + 20000
WHERE a.id % 7 = 0;

-- Updates and deletes churn the pages and the heap.
UPDATE item SET name = name || '-u', payload = zeroblob(length(payload) * 2) WHERE id % 3 = 0;
DELETE FROM item WHERE id % 5 = 0;
SELECT 'after', count(*), sum(length(name)), sum(length(payload)) FROM item;

-- Distinct strings through a temporary b-tree, then a sorted sample.
SELECT 'distinct', count(DISTINCT substr(name, 1, 8)) FROM item;
SELECT 'sample', id, name FROM item ORDER BY name DESC, id LIMIT 3;
