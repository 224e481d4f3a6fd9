//! Query limits, each refused with `LIMIT_EXCEEDED` naming the limit (`extensions.limit`).

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ServerError, ServerResult, ValidationResult, Variables};

/// The limits a query must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of selections.
    pub depth: usize,
    /// Complexity, one per field unless a field says otherwise (lists count their page size).
    pub complexity: usize,
    /// Aliases in the whole document.
    pub aliases: usize,
    /// Directives in the whole document.
    pub directives: usize,
    /// Request body size in bytes (checked by the transport before parsing).
    pub body_bytes: usize,
    /// Operations in one batched request (checked by the transport before parsing).
    pub batch: usize,
}

/// The limits Baton serves with.
pub const LIMITS: Limits = Limits {
    depth: 8,
    complexity: 400,
    aliases: 15,
    directives: 10,
    body_bytes: 64 * 1024,
    batch: 5,
};

/// The error answering a request over `limit`.
pub fn exceeded(limit: &str, max: usize) -> ServerError {
    let mut error = ServerError::new(
        format!("the request exceeds the {limit} limit of {max}"),
        None,
    );
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", "LIMIT_EXCEEDED");
    extensions.set("limit", limit);
    extensions.set("max", max as u64);
    error.extensions = Some(extensions);
    error
}

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(*self)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Limits {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let mut counts = Counts::default();
        for (_, operation) in document.operations.iter() {
            counts.directives += operation.node.directives.len();
            counts.visit(&operation.node.selection_set.node);
        }
        for fragment in document.fragments.values() {
            counts.directives += fragment.node.directives.len();
            counts.visit(&fragment.node.selection_set.node);
        }
        if counts.aliases > self.aliases {
            return Err(exceeded("aliases", self.aliases));
        }
        if counts.directives > self.directives {
            return Err(exceeded("directives", self.directives));
        }
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        if result.depth > self.depth {
            return Err(vec![exceeded("depth", self.depth)]);
        }
        if result.complexity > self.complexity {
            return Err(vec![exceeded("complexity", self.complexity)]);
        }
        Ok(result)
    }
}

#[derive(Default)]
struct Counts {
    aliases: usize,
    directives: usize,
}

impl Counts {
    fn visit(&mut self, selections: &SelectionSet) {
        for selection in &selections.items {
            match &selection.node {
                Selection::Field(field) => {
                    self.aliases += usize::from(field.node.alias.is_some());
                    self.directives += field.node.directives.len();
                    self.visit(&field.node.selection_set.node);
                }
                Selection::FragmentSpread(spread) => {
                    self.directives += spread.node.directives.len();
                }
                Selection::InlineFragment(inline) => {
                    self.directives += inline.node.directives.len();
                    self.visit(&inline.node.selection_set.node);
                }
            }
        }
    }
}
