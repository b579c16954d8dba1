//! Built-in functions and catalog relations that restricted roles may not use, and why.
//!
//! Masking works by rewriting relation references; anything that reads data *by name*
//! (a query or table name passed as text), reaches outside the database, echoes query
//! text (which carries the hash key of the `hash` mask), or changes name resolution
//! behind the analyser's back escapes that rewrite, so it is refused outright.

/// Why a built-in function is refused to restricted roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Danger {
    /// Runs SQL given as text or reads a relation named in a text argument.
    RunsSql,
    /// Reads or writes server files, large objects or other databases.
    External,
    /// Echoes query text (which can carry the `hash` mask key) or other sessions' data.
    EchoesQueries,
    /// Changes settings such as `search_path` or `role` that the analysis relies on.
    ChangesSettings,
}

impl Danger {
    /// Human wording for denial messages.
    pub fn describe(self) -> &'static str {
        match self {
            Danger::RunsSql => "it runs SQL or reads relations given by name",
            Danger::External => "it reaches files, large objects or other databases",
            Danger::EchoesQueries => "it exposes query text or other sessions' data",
            Danger::ChangesSettings => "it changes session settings the analysis relies on",
        }
    }
}

/// Exact names (lower case, as the catalog stores built-ins) of refused built-ins.
const EXACT: &[(&str, Danger)] = &[
    // XML export functions run the query text / read the table named in their argument.
    ("query_to_xml", Danger::RunsSql),
    ("query_to_xmlschema", Danger::RunsSql),
    ("query_to_xml_and_xmlschema", Danger::RunsSql),
    ("table_to_xml", Danger::RunsSql),
    ("table_to_xmlschema", Danger::RunsSql),
    ("table_to_xml_and_xmlschema", Danger::RunsSql),
    ("cursor_to_xml", Danger::RunsSql),
    ("cursor_to_xmlschema", Danger::RunsSql),
    ("schema_to_xml", Danger::RunsSql),
    ("schema_to_xmlschema", Danger::RunsSql),
    ("schema_to_xml_and_xmlschema", Danger::RunsSql),
    ("database_to_xml", Danger::RunsSql),
    ("database_to_xmlschema", Danger::RunsSql),
    ("database_to_xml_and_xmlschema", Danger::RunsSql),
    // ts_stat runs its text argument as a query; ts_rewrite(query, text) too (checked by arity).
    ("ts_stat", Danger::RunsSql),
    // Server files.
    ("pg_read_file", Danger::External),
    ("pg_read_binary_file", Danger::External),
    ("pg_stat_file", Danger::External),
    ("pg_file_write", Danger::External),
    ("pg_file_read", Danger::External),
    ("pg_current_logfile", Danger::External),
    // Large objects (their contents live outside the masked relations).
    ("loread", Danger::External),
    ("lowrite", Danger::External),
    // Replication / logical decoding streams row images.
    ("pg_create_logical_replication_slot", Danger::External),
    ("pg_create_physical_replication_slot", Danger::External),
    ("pg_replication_slot_advance", Danger::External),
    ("pg_copy_logical_replication_slot", Danger::External),
    ("pg_copy_physical_replication_slot", Danger::External),
    // Query text of this or other sessions (the rewritten text carries the hash key).
    ("current_query", Danger::EchoesQueries),
    ("pg_stat_get_activity", Danger::EchoesQueries),
    ("pg_stat_get_backend_activity", Danger::EchoesQueries),
    ("pg_stat_statements", Danger::EchoesQueries),
    ("pg_stat_statements_info", Danger::EchoesQueries),
    ("pg_prepared_statement", Danger::EchoesQueries),
    ("pg_cursor", Danger::EchoesQueries),
    ("pg_stat_get_wal_receiver", Danger::EchoesQueries),
    ("pg_hba_file_rules", Danger::EchoesQueries),
    ("pg_ident_file_mappings", Danger::EchoesQueries),
    ("pg_show_all_file_settings", Danger::EchoesQueries),
    ("pg_get_replication_slots", Danger::EchoesQueries),
    // Extended-statistics MCV lists carry column values.
    ("pg_mcv_list_items", Danger::EchoesQueries),
    // Settings that change name resolution or identity.
    ("set_config", Danger::ChangesSettings),
];

/// Name prefixes of refused built-ins.
const PREFIXES: &[(&str, Danger)] = &[
    // dblink and dblink_* query other databases.
    ("dblink", Danger::External),
    // lo_import/lo_export/lo_get/lo_put/lo_open/lo_from_bytea…
    ("lo_", Danger::External),
    // pg_ls_dir, pg_ls_logdir, pg_ls_waldir, pg_ls_tmpdir, pg_ls_archive_statusdir…
    ("pg_ls_", Danger::External),
    // pg_logical_slot_get_changes / peek_changes / emit_message…
    ("pg_logical_", Danger::External),
    // pg_stat_statements_reset and friends.
    ("pg_stat_statements", Danger::EchoesQueries),
];

/// Is the built-in `name` (lower case) refused to restricted roles? `args` is the
/// argument count, for functions whose danger depends on the form.
pub fn builtin_danger(name: &str, args: usize) -> Option<Danger> {
    if name == "ts_rewrite" && args == 2 {
        // ts_rewrite(query, text): the second argument is a query that is executed.
        return Some(Danger::RunsSql);
    }
    if let Some((_, d)) = EXACT.iter().find(|(n, _)| *n == name) {
        return Some(*d);
    }
    PREFIXES
        .iter()
        .find(|(p, _)| name.starts_with(p))
        .map(|(_, d)| *d)
}

/// [`builtin_danger`] by exact name only (no prefix match), for a name that may as well
/// be a column (`t.lo_total` is a column more often than a call of `lo_total(t)`).
pub fn exact_builtin_danger(name: &str, args: usize) -> Option<Danger> {
    if name == "ts_rewrite" && args == 2 {
        return Some(Danger::RunsSql);
    }
    EXACT.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
}

/// pg_catalog / information_schema relations that expose data values, query text or
/// secrets; refused to restricted roles although other catalog relations stay readable.
const VALUE_EXPOSING: &[&str] = &[
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic",
    "pg_statistic_ext",
    "pg_statistic_ext_data",
    "pg_stat_activity",
    "pg_stat_statements",
    "pg_stat_statements_info",
    "pg_prepared_statements",
    "pg_cursors",
    "pg_authid",
    "pg_shadow",
    "pg_user_mapping",
    "pg_user_mappings",
    "pg_largeobject",
    "pg_largeobject_metadata",
    "pg_replication_slots",
    "pg_stat_replication",
    "pg_stat_wal_receiver",
    "pg_subscription",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_file_settings",
    "pg_db_role_setting",
    "pg_foreign_server",
    "pg_foreign_table",
    "user_mapping_options",
    "user_mappings",
    "foreign_server_options",
];

/// Does the system relation `name` expose data values or query text?
pub fn is_value_exposing_relation(name: &str) -> bool {
    VALUE_EXPOSING.contains(&name)
}

/// Schemas whose relations are system catalogs (not subject to `role.tables`).
pub fn is_system_schema(schema: &str) -> bool {
    matches!(schema, "pg_catalog" | "information_schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_builtins_are_listed() {
        assert_eq!(builtin_danger("query_to_xml", 4), Some(Danger::RunsSql));
        assert_eq!(builtin_danger("dblink_exec", 2), Some(Danger::External));
        assert_eq!(builtin_danger("lo_export", 2), Some(Danger::External));
        assert_eq!(
            builtin_danger("set_config", 3),
            Some(Danger::ChangesSettings)
        );
        assert_eq!(builtin_danger("ts_rewrite", 2), Some(Danger::RunsSql));
        assert_eq!(builtin_danger("ts_rewrite", 3), None);
        assert_eq!(builtin_danger("lower", 1), None);
        assert_eq!(builtin_danger("pg_terminate_backend", 1), None);
    }

    #[test]
    fn value_exposing_relations() {
        assert!(is_value_exposing_relation("pg_stats"));
        assert!(!is_value_exposing_relation("pg_class"));
    }
}
