-- Audience definitions (ODP "segments"): a name applications ask about, linked to the external
-- audience id that events carry. Membership is keyed by the external id, so events may arrive
-- before the definition and show up the moment it is created.

CREATE TABLE passthrough.audiences (
  id           integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name         text        COLLATE "C" NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9_]{1,255}$'),
  audience_key integer     NOT NULL UNIQUE REFERENCES passthrough.external_audiences (id),
  description  text        CHECK (length(description) <= 4096),
  metadata     jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
  revision     integer     NOT NULL DEFAULT 1 CHECK (revision >= 1),
  ttl          interval    CHECK (ttl > interval '0' AND extract(day FROM ttl) = 0 AND extract(month FROM ttl) = 0
                                  AND extract(year FROM ttl) = 0),  -- seconds only: no time zone or calendar
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE passthrough.audiences IS
  'Audience definitions. revision is 1 on create and grows by one on every change that alters the definition; a no-op update leaves it alone.';
COMMENT ON COLUMN passthrough.audiences.ttl IS
  'Time to live of a membership (NULL: none): a qualify event older than this no longer counts. Set with passthrough.set_audience_ttl; expiry: sql/functions/100_expiry.sql.';
