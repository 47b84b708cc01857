//! A template's instances, a page at a time.

use serde::{Deserialize, Serialize};

use crate::limit::Limit;

/// The most instances one page holds.
pub const MAX_PAGE: usize = 1000;

/// Which instances of a template to list (the query string of
/// `GET /v1/limits/{template}/instances`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams, utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct InstancePage {
    /// Only instances whose name starts with this.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// `name` (the default) or `busiest` (most held, decaying and waiting
    /// slots first).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(inline))]
    pub order: InstanceOrder,
    /// Start after this instance: the `next_after` of the page before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many (1–1000, default 100).
    #[serde(default = "default_count")]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub count: usize,
}

fn default_count() -> usize {
    100
}

impl Default for InstancePage {
    fn default() -> Self {
        InstancePage {
            prefix: String::new(),
            order: InstanceOrder::Name,
            after: None,
            count: default_count(),
        }
    }
}

/// The order instances are listed in.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum InstanceOrder {
    /// By name.
    #[default]
    Name,
    /// Most occupied first, then by name.
    Busiest,
}

impl InstanceOrder {
    /// The busiest first, or by name: how a `--busiest` flag reads.
    pub fn busiest_first(busiest: bool) -> Self {
        if busiest {
            InstanceOrder::Busiest
        } else {
            InstanceOrder::Name
        }
    }
}

impl From<InstanceOrder> for ratekeeper_core::InstanceOrder {
    fn from(order: InstanceOrder) -> Self {
        match order {
            InstanceOrder::Name => ratekeeper_core::InstanceOrder::Name,
            InstanceOrder::Busiest => ratekeeper_core::InstanceOrder::Busiest,
        }
    }
}

impl InstancePage {
    /// Refuses a page size outside 1 to [`MAX_PAGE`], saying so.
    pub fn check(&self) -> Result<(), String> {
        if (1..=MAX_PAGE).contains(&self.count) {
            Ok(())
        } else {
            Err(format!(
                "count must be between 1 and {MAX_PAGE}, got {}",
                self.count
            ))
        }
    }

    /// The engine's query for this page (at most [`MAX_PAGE`] instances).
    pub fn query(&self) -> ratekeeper_core::InstanceQuery<'_> {
        ratekeeper_core::InstanceQuery {
            prefix: &self.prefix,
            order: self.order.into(),
            after: self.after.as_deref(),
            count: self.count.clamp(1, MAX_PAGE),
        }
    }
}

/// A page of a template's instances.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Instances {
    /// The instances, in the order asked for.
    pub instances: Vec<Limit>,
    /// Where the next page starts (`after=`), if the page was full.
    pub next_after: Option<String>,
}

impl Instances {
    /// A page of `found`, which was asked for `page`.
    pub fn new(found: Vec<Limit>, page: &InstancePage) -> Self {
        let next_after = (found.len() >= page.query().count)
            .then(|| found.last().map(|l| l.name.clone()))
            .flatten();
        Instances {
            instances: found,
            next_after,
        }
    }
}
