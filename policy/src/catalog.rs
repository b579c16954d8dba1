//! The catalog seam: what `decide` needs to know about the database (relations, their
//! columns in order, view dependencies, user functions) without doing any I/O.
//!
//! The proxy implements [`Catalog`] over its refreshed cache; tests and
//! `pgveil explain --catalog FILE` use [`StaticCatalog`], a JSON snapshot.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A read-only snapshot of the database catalog.
pub trait Catalog {
    /// The relation `schema.name` (names exactly as the catalog stores them).
    fn relation(&self, schema: &str, name: &str) -> Option<&Relation>;
    /// Does the schema exist? (Used to skip `"$user"` and missing search_path entries.)
    fn schema_exists(&self, schema: &str) -> bool;
    /// Non-built-in (not pg_catalog/information_schema) functions named `name`, by schema.
    fn user_function_schemas(&self, name: &str) -> Vec<String>;
    /// Changes whenever the snapshot changes (part of the proxy's decision cache key).
    fn version(&self) -> u64;
}

/// One relation with its columns in attribute order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relation {
    pub schema: String,
    pub name: String,
    pub kind: RelationKind,
    /// Columns in attribute order (what `*` expands to).
    pub columns: Vec<Column>,
    /// For views and materialized views: the base columns the definition reads.
    #[serde(default)]
    pub depends_on: Vec<ColumnRef>,
    /// Constraints that compare a written row with other rows or other columns (see
    /// [`Constraint`]); a write whose success would reveal protected values is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
}

impl Relation {
    /// The column named `name` (exact match), if any.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Views and materialized views read other relations with their owner's rights.
    pub fn is_view(&self) -> bool {
        matches!(
            self.kind,
            RelationKind::View | RelationKind::MaterializedView
        )
    }
}

/// What kind of relation (`pg_class.relkind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelationKind {
    Table,
    View,
    MaterializedView,
    Foreign,
    Partitioned,
    Sequence,
    Other,
}

/// A column and its type as `format_type()` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub type_name: String,
}

/// A constraint PostgreSQL checks when a row is written, whose outcome (success or an
/// error) can depend on values the statement did not write: other rows' values (unique,
/// exclusion, foreign keys) or the row's other columns (CHECK).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// The constraint's or index's name (for messages).
    pub name: String,
    pub kind: ConstraintKind,
    /// This relation's columns the constraint reads (keys, expressions, predicates).
    pub columns: Vec<String>,
    /// Foreign keys: the relation at the other end and its columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<OtherEnd>,
}

/// What a [`Constraint`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConstraintKind {
    /// A unique index or constraint, or a primary key: compared with every other row.
    Unique,
    /// An exclusion constraint: compared with every other row.
    Exclusion,
    /// A CHECK constraint: compares the row's own columns.
    Check,
    /// A foreign key of this relation: the referenced row must exist.
    ForeignKey,
    /// A foreign key of another relation that references this one: a referenced row
    /// may not change or go while referencing rows exist (unless the action cascades).
    ReferencedBy,
}

/// The relation at the other end of a foreign key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherEnd {
    pub schema: String,
    pub table: String,
    pub columns: Vec<String>,
}

/// A fully qualified column reference (view dependencies).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ColumnRef {
    pub schema: String,
    pub table: String,
    pub column: String,
}

/// Errors reading a catalog snapshot.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("invalid catalog snapshot: {0}")]
    Json(#[from] serde_json::Error),
}

/// An in-memory catalog snapshot, (de)serialisable as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticCatalog {
    #[serde(default)]
    relations: Vec<Relation>,
    /// Extra schemas that exist without relations.
    #[serde(default)]
    schemas: BTreeSet<String>,
    /// Non-built-in functions: name → schemas.
    #[serde(default)]
    functions: BTreeMap<String, BTreeSet<String>>,
    #[serde(default)]
    version: u64,
    /// schema → name → position in `relations` (lookups by `&str`, no allocation).
    #[serde(skip)]
    index: BTreeMap<String, BTreeMap<String, usize>>,
    #[serde(skip)]
    relation_schemas: BTreeSet<String>,
}

impl StaticCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a JSON snapshot (the format [`StaticCatalog::to_json`] writes).
    pub fn from_json(text: &str) -> Result<Self, CatalogError> {
        let mut cat: StaticCatalog = serde_json::from_str(text)?;
        cat.reindex();
        Ok(cat)
    }

    /// Writes the snapshot as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Adds (or replaces) a relation.
    pub fn add(&mut self, relation: Relation) {
        let existing = self
            .index
            .get(&relation.schema)
            .and_then(|m| m.get(&relation.name))
            .copied();
        match existing {
            Some(i) => self.relations[i] = relation,
            None => {
                self.relation_schemas.insert(relation.schema.clone());
                self.index
                    .entry(relation.schema.clone())
                    .or_default()
                    .insert(relation.name.clone(), self.relations.len());
                self.relations.push(relation);
            }
        }
        self.version += 1;
    }

    /// Declares that `schema` exists even without relations.
    pub fn add_schema(&mut self, schema: impl Into<String>) {
        self.schemas.insert(schema.into());
        self.version += 1;
    }

    /// Registers a non-built-in function `schema.name`.
    pub fn add_function(&mut self, schema: impl Into<String>, name: impl Into<String>) {
        self.functions
            .entry(name.into())
            .or_default()
            .insert(schema.into());
        self.version += 1;
    }

    /// Every relation, in insertion order.
    pub fn relations(&self) -> &[Relation] {
        &self.relations
    }

    fn reindex(&mut self) {
        self.index = BTreeMap::new();
        for (i, r) in self.relations.iter().enumerate() {
            self.index
                .entry(r.schema.clone())
                .or_default()
                .insert(r.name.clone(), i);
        }
        self.relation_schemas = self.relations.iter().map(|r| r.schema.clone()).collect();
    }
}

impl Catalog for StaticCatalog {
    fn relation(&self, schema: &str, name: &str) -> Option<&Relation> {
        self.index
            .get(schema)
            .and_then(|m| m.get(name))
            .and_then(|&i| self.relations.get(i))
    }

    fn schema_exists(&self, schema: &str) -> bool {
        self.schemas.contains(schema)
            || matches!(schema, "pg_catalog" | "information_schema")
            || self.relation_schemas.contains(schema)
            || self.functions.values().any(|s| s.contains(schema))
    }

    fn user_function_schemas(&self, name: &str) -> Vec<String> {
        self.functions
            .get(name)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn version(&self) -> u64 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_lookups() {
        let mut cat = StaticCatalog::new();
        cat.add(Relation {
            schema: "public".into(),
            name: "t".into(),
            kind: RelationKind::Table,
            columns: vec![Column {
                name: "a".into(),
                type_name: "integer".into(),
            }],
            depends_on: vec![],
            constraints: vec![Constraint {
                name: "t_a_fkey".into(),
                kind: ConstraintKind::ForeignKey,
                columns: vec!["a".into()],
                other: Some(OtherEnd {
                    schema: "public".into(),
                    table: "u".into(),
                    columns: vec!["id".into()],
                }),
            }],
        });
        cat.add_function("public", "f");
        let back = StaticCatalog::from_json(&cat.to_json()).expect("own json parses");
        assert_eq!(
            back.relation("public", "t").map(|r| r.columns.len()),
            Some(1)
        );
        assert_eq!(back.relation("public", "t"), cat.relation("public", "t"));
        assert!(back.relation("public", "T").is_none());
        assert_eq!(back.user_function_schemas("f"), vec!["public".to_string()]);
        assert!(back.schema_exists("public"));
        assert!(!back.schema_exists("nope"));
    }

    #[test]
    fn bad_json_is_an_error() {
        assert!(StaticCatalog::from_json("{\"relations\": 3}").is_err());
    }
}
