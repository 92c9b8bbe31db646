-- A request's stored outcome is answered again only to a copy of the command
-- with the same reply_to: a request_id replayed by someone else (another
-- reply_to) must not hand them the first requester's answer. NULL: stored
-- before this migration, answered to any reply_to as before.
-- (A nullable column without a default only changes the catalog.)
ALTER TABLE processed_requests ADD COLUMN reply_to text;
