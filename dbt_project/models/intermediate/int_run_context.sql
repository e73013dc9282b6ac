-- The as-of date the staging and intermediate layers were last built for: the what-if
-- simulation rebuilds them when they do not match the latest publication.
select {{ as_of() }} as as_of_date
