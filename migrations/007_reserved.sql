-- Reserved for the lead's 007 (hot-table autovacuum, branch i11-vacuum), so
-- that 008 applies on this branch: tern refuses a gap. Delete this file when
-- main has its own 007.
SELECT 1;
