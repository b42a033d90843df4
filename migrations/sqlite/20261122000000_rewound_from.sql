-- The executions a rewind replaced by the current one (JSON array, oldest first; NULL when
-- none). A rewound execution continues the old one, so a message still addressed to an old
-- execution (a child's completion committed while its parent was being rewound) is
-- delivered to the current one instead of being dropped. Continue-as-new clears it.
ALTER TABLE instances ADD COLUMN rewound_from TEXT;
