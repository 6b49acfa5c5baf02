-- The schema of the Python link fetcher, which the download service reads.
-- Every statement is IF NOT EXISTS so that a database the Python system created
-- is adopted as it is: no table is rebuilt and no existing row changes.

CREATE TABLE IF NOT EXISTS granule (
    id varchar(256) PRIMARY KEY,
    filename varchar(256) NOT NULL,
    tileid varchar(5) NOT NULL,
    size bigint NOT NULL,
    beginposition timestamp NOT NULL,
    endposition timestamp NOT NULL,
    ingestiondate timestamp NOT NULL,
    download_url varchar(256) NOT NULL,
    checksum varchar(256) NOT NULL DEFAULT '',
    downloaded boolean NOT NULL DEFAULT false,
    download_retries smallint NOT NULL DEFAULT 0,
    expired boolean NOT NULL DEFAULT false
);

-- Columns the Python system added in later releases; an older database gets them here.
ALTER TABLE granule ADD COLUMN IF NOT EXISTS checksum varchar(256) NOT NULL DEFAULT '';
ALTER TABLE granule ADD COLUMN IF NOT EXISTS download_retries smallint NOT NULL DEFAULT 0;
ALTER TABLE granule ADD COLUMN IF NOT EXISTS expired boolean NOT NULL DEFAULT false;

CREATE TABLE IF NOT EXISTS granule_count (
    date date NOT NULL,
    platform varchar NOT NULL DEFAULT 'S2A+S2B',
    available_links bigint NOT NULL,
    fetched_links bigint NOT NULL,
    last_fetched_time timestamp NOT NULL,
    PRIMARY KEY (date, platform)
);

CREATE TABLE IF NOT EXISTS status (
    key_name varchar(256) PRIMARY KEY,
    value varchar(256) NOT NULL
);
