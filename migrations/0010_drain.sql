-- A destination deleted with `drain` (docs/catalog.md): its links end at the ingest head of
-- the change, and it stays, delivering what its sources accepted before, until maintenance
-- finds its lane past every link's end with no unfinished job, and deletes it then. NULL: the
-- destination is not draining.
ALTER TABLE destinations ADD COLUMN draining_since timestamptz;
