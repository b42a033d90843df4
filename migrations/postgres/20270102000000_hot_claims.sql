-- Claims and commits update an instance row several times per orchestration. With no
-- index on the lease columns and room left on each page, those updates are HOT (no new
-- index entries), which is most of their cost otherwise. renew_leases names the rows it
-- renews instead of finding them by owner.
DROP INDEX instances_lease;
DROP INDEX entities_lease;
ALTER TABLE instances SET (fillfactor = 80);
ALTER TABLE entities SET (fillfactor = 80);
