-- outbox.headers becomes bytea in handlers.EncodeHeaders' form (for each
-- header: 4-byte big-endian key length, key, 4-byte value length, value):
-- cheaper than jsonb to write and to read. Rows waiting to be published are
-- converted, so nothing unpublished is lost.
ALTER TABLE outbox ADD COLUMN headers_bin bytea NOT NULL DEFAULT ''::bytea;

UPDATE outbox SET headers_bin = coalesce((
    SELECT string_agg(
        int4send(octet_length(convert_to(h->>'k', 'UTF8'))) || convert_to(h->>'k', 'UTF8')
        || int4send(octet_length(coalesce(decode(h->>'v', 'base64'), ''::bytea))) || coalesce(decode(h->>'v', 'base64'), ''::bytea),
        ''::bytea ORDER BY o)
    FROM jsonb_array_elements(headers) WITH ORDINALITY AS x(h, o)), ''::bytea);

ALTER TABLE outbox DROP COLUMN headers;
ALTER TABLE outbox RENAME COLUMN headers_bin TO headers;
