//! What the page shows, computed here so that the browser gets small answers: each
//! relationship's health, pages of sorted and filtered rows, the federation map (one node per
//! trust domain up to [`MAP_NODES`], groups beyond), and the next CA rotation step.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use fedhub_core::endpoint::FetchSource;
use fedhub_hub::admin::api::{
    AgentView, EntryView, KeyView, RefreshStatusView, RelationshipView, Timestamp,
};
use fedhub_hub::ca::KeyState;
use serde::{Deserialize, Serialize};

use crate::error::DashboardError;

/// The map shows one node per trust domain up to this many relationships, groups beyond.
pub const MAP_NODES: usize = 40;

/// Rows per page unless the page asks otherwise.
pub const DEFAULT_PER_PAGE: usize = 50;

/// The most rows one page may ask for.
pub const MAX_PER_PAGE: usize = 200;

/// The longest filter text accepted.
pub const MAX_FILTER_LEN: usize = 256;

/// A successful refresh older than this counts as stale even when the next one is not yet due.
pub const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A refresh overdue by more than this makes the relationship stale.
pub const OVERDUE_AFTER: Duration = Duration::from_secs(60);

/// How a relationship's bundle fares, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// The last attempt failed.
    Failing,
    /// The last success is old, or the next refresh is overdue.
    Stale,
    /// Never fetched yet.
    Never,
    /// Fetched successfully and on schedule.
    Fresh,
}

impl Health {
    /// Every health, worst first.
    pub const ALL: [Self; 4] = [Self::Failing, Self::Stale, Self::Never, Self::Fresh];

    /// Its name on the page.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failing => "failing",
            Self::Stale => "stale",
            Self::Never => "never fetched",
            Self::Fresh => "fresh",
        }
    }

    /// The health of a refresh status at `now`.
    pub fn of(status: &RefreshStatusView, now: SystemTime) -> Self {
        if status.consecutive_failures > 0 {
            return Self::Failing;
        }
        let Some(success) = status.last_success_at else {
            return Self::Never;
        };
        let old = now.duration_since(success.0).unwrap_or_default() > STALE_AFTER;
        let overdue = status
            .next_refresh_at
            .is_some_and(|due| now.duration_since(due.0).unwrap_or_default() > OVERDUE_AFTER);
        if old || overdue {
            Self::Stale
        } else {
            Self::Fresh
        }
    }
}

/// Relationships per health.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HealthCounts {
    /// Failing.
    pub failing: usize,
    /// Stale.
    pub stale: usize,
    /// Never fetched.
    pub never: usize,
    /// Fresh.
    pub fresh: usize,
}

impl HealthCounts {
    fn add(&mut self, health: Health) {
        match health {
            Health::Failing => self.failing += 1,
            Health::Stale => self.stale += 1,
            Health::Never => self.never += 1,
            Health::Fresh => self.fresh += 1,
        }
    }
}

/// One row of the relationships table.
#[derive(Debug, Clone, Serialize)]
pub struct RelationshipRow {
    /// The foreign trust domain.
    pub trust_domain: String,
    /// `https_web` or `https_spiffe`.
    pub profile: String,
    /// The bundle endpoint.
    pub bundle_endpoint_url: String,
    /// `direct`, or `relay` when the endpoint is a relay serving a bundle map.
    pub source: FetchSource,
    /// `https_spiffe`: the endpoint's SPIFFE ID.
    pub endpoint_spiffe_id: Option<String>,
    /// Whether an empty bundle is applied.
    pub accept_empty_bundle: bool,
    /// Whether bundles without a sequence are refused.
    pub require_sequence: bool,
    /// Whether an extra CA is configured (`https_web`).
    pub has_extra_ca: bool,
    /// The refresh status as the hub reports it.
    pub status: RefreshStatusView,
    /// Seconds since the last success.
    pub last_success_age_secs: Option<u64>,
    /// The stored bundle's sequence.
    pub sequence: Option<u64>,
    /// The earliest expiry among the stored bundle's X.509 authorities.
    pub earliest_expiry: Option<Timestamp>,
    /// Its health.
    pub health: Health,
    /// The federation groups it belongs to.
    pub groups: Vec<String>,
}

impl RelationshipRow {
    /// The row of `view` at `now`.
    pub fn new(
        view: RelationshipView,
        now: SystemTime,
        groups: Vec<String>,
        earliest_expiry: Option<SystemTime>,
    ) -> Self {
        let health = Health::of(&view.status, now);
        Self {
            trust_domain: view.trust_domain.to_string(),
            profile: view.config.profile.to_string(),
            bundle_endpoint_url: view.config.bundle_endpoint_url,
            source: view.config.source,
            endpoint_spiffe_id: view.config.endpoint_spiffe_id.map(|id| id.to_string()),
            accept_empty_bundle: view.config.accept_empty_bundle,
            require_sequence: view.config.require_sequence,
            has_extra_ca: view.config.extra_ca_pem.is_some(),
            last_success_age_secs: view
                .status
                .last_success_at
                .map(|t| now.duration_since(t.0).unwrap_or_default().as_secs()),
            status: view.status,
            sequence: view.bundle.as_ref().and_then(|b| b.sequence),
            earliest_expiry: earliest_expiry.map(Timestamp),
            health,
            groups,
        }
    }
}

/// Paging, sorting and filtering of a table, from the query string.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PageQuery {
    /// The page, from 1.
    pub page: Option<usize>,
    /// Rows per page, at most [`MAX_PER_PAGE`].
    pub per_page: Option<usize>,
    /// The column to sort by.
    pub sort: Option<String>,
    /// `desc` for descending.
    pub dir: Option<String>,
    /// Text the row must contain (trust domain, endpoint; SPIFFE ID for agents and entries).
    pub q: Option<String>,
    /// Relationships: only this health.
    pub health: Option<Health>,
    /// Relationships: only members of this federation group.
    pub group: Option<String>,
    /// Entries: parent ID contains.
    pub parent: Option<String>,
    /// Entries: a selector contains.
    pub selector: Option<String>,
    /// Entries: federates with a trust domain containing this.
    pub federates_with: Option<String>,
}

impl PageQuery {
    /// Checks the filters' lengths.
    ///
    /// # Errors
    /// [`DashboardError::Invalid`].
    pub fn check(&self) -> Result<(), DashboardError> {
        for (name, value) in [
            ("q", &self.q),
            ("sort", &self.sort),
            ("group", &self.group),
            ("parent", &self.parent),
            ("selector", &self.selector),
            ("federates_with", &self.federates_with),
        ] {
            if value.as_ref().is_some_and(|v| v.len() > MAX_FILTER_LEN) {
                return Err(DashboardError::Invalid(format!(
                    "the filter {name} is longer than {MAX_FILTER_LEN} bytes"
                )));
            }
        }
        Ok(())
    }

    fn descending(&self) -> bool {
        self.dir.as_deref() == Some("desc")
    }
}

/// One page of a table.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    /// Rows before filtering.
    pub total: usize,
    /// Rows after filtering.
    pub matched: usize,
    /// This page, from 1.
    pub page: usize,
    /// Rows per page.
    pub per_page: usize,
    /// The time the ages are counted to.
    pub now: Timestamp,
    /// This page's rows.
    pub items: Vec<T>,
}

/// Filters `rows` with `keep`, sorts the rest with `order` (reversed for `dir=desc`), and cuts
/// out the page asked for.
pub fn page<T>(
    rows: Vec<T>,
    query: &PageQuery,
    now: SystemTime,
    keep: impl Fn(&T) -> bool,
    order: impl Fn(&T, &T) -> Ordering,
) -> Page<T> {
    let total = rows.len();
    let mut rows: Vec<T> = rows.into_iter().filter(|row| keep(row)).collect();
    rows.sort_by(|a, b| {
        let ordering = order(a, b);
        if query.descending() {
            ordering.reverse()
        } else {
            ordering
        }
    });
    let matched = rows.len();
    let per_page = query
        .per_page
        .unwrap_or(DEFAULT_PER_PAGE)
        .clamp(1, MAX_PER_PAGE);
    let pages = matched.div_ceil(per_page).max(1);
    let page = query.page.unwrap_or(1).clamp(1, pages);
    let items = rows
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    Page {
        total,
        matched,
        page,
        per_page,
        now: Timestamp(now),
        items,
    }
}

fn contains(haystack: &str, needle: Option<&str>) -> bool {
    needle.is_none_or(|needle| {
        haystack
            .to_ascii_lowercase()
            .contains(&needle.trim().to_ascii_lowercase())
    })
}

/// A page of relationships.
pub fn relationships_page(
    rows: Vec<RelationshipRow>,
    query: &PageQuery,
    now: SystemTime,
) -> Page<RelationshipRow> {
    let sort = query.sort.clone().unwrap_or_default();
    page(
        rows,
        query,
        now,
        |row| {
            (contains(&row.trust_domain, query.q.as_deref())
                || contains(&row.bundle_endpoint_url, query.q.as_deref()))
                && query.health.is_none_or(|h| h == row.health)
                && query
                    .group
                    .as_ref()
                    .is_none_or(|g| g.is_empty() || row.groups.contains(g))
        },
        |a, b| {
            let by = match sort.as_str() {
                "health" => a.health.cmp(&b.health),
                "last_success_at" => a.status.last_success_at.cmp(&b.status.last_success_at),
                "last_attempt_at" => a.status.last_attempt_at.cmp(&b.status.last_attempt_at),
                "consecutive_failures" => a
                    .status
                    .consecutive_failures
                    .cmp(&b.status.consecutive_failures),
                "next_refresh_at" => a.status.next_refresh_at.cmp(&b.status.next_refresh_at),
                "earliest_expiry" => a.earliest_expiry.cmp(&b.earliest_expiry),
                "sequence" => a.sequence.cmp(&b.sequence),
                _ => Ordering::Equal,
            };
            by.then_with(|| a.trust_domain.cmp(&b.trust_domain))
        },
    )
}

/// A page of entries, searched by SPIFFE ID (`q`), parent, selector and federated trust domain.
pub fn entries_page(rows: Vec<EntryView>, query: &PageQuery, now: SystemTime) -> Page<EntryView> {
    let sort = query.sort.clone().unwrap_or_default();
    page(
        rows,
        query,
        now,
        |e| {
            contains(e.spec.spiffe_id.as_str(), query.q.as_deref())
                && contains(e.spec.parent_id.as_str(), query.parent.as_deref())
                && (query.selector.is_none()
                    || e.spec
                        .selectors
                        .iter()
                        .any(|s| contains(s, query.selector.as_deref())))
                && (query.federates_with.is_none()
                    || e.effective_federates_with
                        .iter()
                        .any(|td| contains(td.name(), query.federates_with.as_deref())))
        },
        |a, b| {
            let by = match sort.as_str() {
                "parent_id" => a.spec.parent_id.as_str().cmp(b.spec.parent_id.as_str()),
                "updated_at" => a.updated_at.cmp(&b.updated_at),
                _ => Ordering::Equal,
            };
            by.then_with(|| a.spec.spiffe_id.as_str().cmp(b.spec.spiffe_id.as_str()))
                .then_with(|| a.id.cmp(&b.id))
        },
    )
}

/// A page of agents, searched by SPIFFE ID (`q`).
pub fn agents_page(rows: Vec<AgentView>, query: &PageQuery, now: SystemTime) -> Page<AgentView> {
    let sort = query.sort.clone().unwrap_or_default();
    page(
        rows,
        query,
        now,
        |a| contains(a.spiffe_id.as_str(), query.q.as_deref()),
        |a, b| {
            let by = match sort.as_str() {
                "last_seen_at" => a.last_seen_at.cmp(&b.last_seen_at),
                "svid_expires_at" => a.svid_expires_at.cmp(&b.svid_expires_at),
                "state" => a.state.as_str().cmp(b.state.as_str()),
                _ => Ordering::Equal,
            };
            by.then_with(|| a.spiffe_id.as_str().cmp(b.spiffe_id.as_str()))
        },
    )
}

/// One node of the federation map around this trust domain.
#[derive(Debug, Clone, Serialize)]
pub struct MapNode {
    /// A trust domain, or a group's name with its size.
    pub label: String,
    /// The trust domain, for a node of one.
    pub trust_domain: Option<String>,
    /// The worst health among its relationships.
    pub health: Health,
    /// How many relationships it stands for.
    pub count: usize,
    /// Its relationships per health.
    pub counts: HealthCounts,
    /// Seconds since the most recent success among them.
    pub last_success_age_secs: Option<u64>,
}

/// The federation map: this trust domain in the middle, the nodes around it.
#[derive(Debug, Clone, Serialize)]
pub struct MapView {
    /// `none` (one node per trust domain), `health` or `group`.
    pub grouped_by: &'static str,
    /// The nodes.
    pub nodes: Vec<MapNode>,
}

/// How the page asks the map to group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapGrouping {
    /// One node per trust domain up to [`MAP_NODES`], by health beyond.
    #[default]
    Auto,
    /// By health.
    Health,
    /// By federation group.
    Group,
}

/// The map of `rows`.
pub fn map(rows: &[RelationshipRow], grouping: MapGrouping) -> MapView {
    let single = |row: &RelationshipRow| {
        let mut counts = HealthCounts::default();
        counts.add(row.health);
        MapNode {
            label: row.trust_domain.clone(),
            trust_domain: Some(row.trust_domain.clone()),
            health: row.health,
            count: 1,
            counts,
            last_success_age_secs: row.last_success_age_secs,
        }
    };
    let grouping = match grouping {
        MapGrouping::Auto if rows.len() <= MAP_NODES => {
            return MapView {
                grouped_by: "none",
                nodes: rows.iter().map(single).collect(),
            };
        }
        MapGrouping::Auto => MapGrouping::Health,
        other => other,
    };
    let mut groups: BTreeMap<String, Vec<&RelationshipRow>> = BTreeMap::new();
    for row in rows {
        if grouping == MapGrouping::Health {
            groups
                .entry(format!("{:?}", row.health))
                .or_default()
                .push(row);
        } else if row.groups.is_empty() {
            groups.entry("no group".into()).or_default().push(row);
        } else {
            for group in &row.groups {
                groups.entry(group.clone()).or_default().push(row);
            }
        }
    }
    let mut nodes: Vec<MapNode> = groups
        .into_iter()
        .map(|(name, members)| {
            let mut counts = HealthCounts::default();
            for row in &members {
                counts.add(row.health);
            }
            let health = members
                .iter()
                .map(|r| r.health)
                .min()
                .unwrap_or(Health::Never);
            let label = if grouping == MapGrouping::Health {
                format!("{} ({})", health.as_str(), members.len())
            } else {
                format!("{name} ({})", members.len())
            };
            MapNode {
                label,
                trust_domain: None,
                health,
                count: members.len(),
                counts,
                last_success_age_secs: members.iter().filter_map(|r| r.last_success_age_secs).min(),
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.health.cmp(&b.health).then_with(|| b.count.cmp(&a.count)));
    // Many federation groups: the smallest are folded into one node.
    if nodes.len() > MAP_NODES {
        let rest = nodes.split_off(MAP_NODES - 1);
        let mut counts = HealthCounts::default();
        for node in &rest {
            counts.failing += node.counts.failing;
            counts.stale += node.counts.stale;
            counts.never += node.counts.never;
            counts.fresh += node.counts.fresh;
        }
        nodes.push(MapNode {
            label: format!("{} more groups", rest.len()),
            trust_domain: None,
            health: rest.iter().map(|n| n.health).min().unwrap_or(Health::Never),
            count: rest.iter().map(|n| n.count).sum(),
            counts,
            last_success_age_secs: rest.iter().filter_map(|n| n.last_success_age_secs).min(),
        });
    }
    MapView {
        grouped_by: if grouping == MapGrouping::Health {
            "health"
        } else {
            "group"
        },
        nodes,
    }
}

/// Relationships per health.
pub fn counts(rows: &[RelationshipRow]) -> HealthCounts {
    let mut counts = HealthCounts::default();
    for row in rows {
        counts.add(row.health);
    }
    counts
}

/// The CA's next scheduled step for one kind of key.
#[derive(Debug, Clone, Serialize)]
pub struct NextRotation {
    /// `x509` or `jwt`.
    pub kind: String,
    /// `prepare` (publish a successor) or `activate` (sign with it).
    pub step: &'static str,
    /// When.
    pub at: Timestamp,
}

/// The next rotation step of each kind of key, from the CA's schedule: a successor is
/// prepared at half of the active key's lifetime and activated at five sixths.
pub fn next_rotations(keys: &[KeyView]) -> Vec<NextRotation> {
    let mut steps = Vec::new();
    for kind in ["x509", "jwt"] {
        let of_kind = || keys.iter().filter(move |k| k.kind == kind);
        let Some(active) = of_kind().find(|k| k.state == KeyState::Active) else {
            continue;
        };
        let lifetime = active
            .not_after
            .0
            .duration_since(active.created_at.0)
            .unwrap_or_default();
        let prepared = of_kind().any(|k| k.state == KeyState::Prepared);
        let (step, fraction) = if prepared {
            ("activate", lifetime * 5 / 6)
        } else {
            ("prepare", lifetime / 2)
        };
        steps.push(NextRotation {
            kind: kind.to_owned(),
            step,
            at: Timestamp(active.created_at.0 + fraction),
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(
        success_ago: Option<u64>,
        failures: u32,
        due_in: Option<i64>,
        now: SystemTime,
    ) -> RefreshStatusView {
        RefreshStatusView {
            last_attempt_at: None,
            last_success_at: success_ago.map(|s| Timestamp(now - Duration::from_secs(s))),
            last_error: None,
            consecutive_failures: failures,
            next_refresh_at: due_in.map(|d| {
                Timestamp(if d >= 0 {
                    now + Duration::from_secs(d.unsigned_abs())
                } else {
                    now - Duration::from_secs(d.unsigned_abs())
                })
            }),
            sequence_dropped: false,
            sequence_dropped_at: None,
            sequence_dropped_after: None,
        }
    }

    #[test]
    fn health_is_failing_then_never_then_stale_then_fresh() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            Health::of(&status(Some(5), 1, Some(30), now), now),
            Health::Failing
        );
        assert_eq!(Health::of(&status(None, 0, None, now), now), Health::Never);
        assert_eq!(
            Health::of(&status(Some(5), 0, Some(30), now), now),
            Health::Fresh
        );
        assert_eq!(
            Health::of(&status(Some(90), 0, Some(-61), now), now),
            Health::Stale
        );
        assert_eq!(
            Health::of(&status(Some(90), 0, Some(-10), now), now),
            Health::Fresh
        );
        assert_eq!(
            Health::of(&status(Some(25 * 3600), 0, Some(60), now), now),
            Health::Stale
        );
    }

    #[test]
    fn pages_are_clamped_and_sorted() {
        let now = SystemTime::UNIX_EPOCH;
        let rows: Vec<u32> = (0..120).collect();
        let query = PageQuery {
            page: Some(9),
            per_page: Some(50),
            dir: Some("desc".into()),
            ..PageQuery::default()
        };
        let page = page(rows, &query, now, |n| n % 2 == 0, Ord::cmp);
        assert_eq!((page.total, page.matched, page.page), (120, 60, 2));
        assert_eq!(page.items, vec![18, 16, 14, 12, 10, 8, 6, 4, 2, 0]);
        let huge = PageQuery {
            per_page: Some(1_000_000),
            ..PageQuery::default()
        };
        assert_eq!(
            super::page((0..1000).collect(), &huge, now, |_| true, Ord::cmp)
                .items
                .len(),
            MAX_PER_PAGE
        );
        let long = PageQuery {
            q: Some("x".repeat(MAX_FILTER_LEN + 1)),
            ..PageQuery::default()
        };
        assert!(long.check().is_err());
    }

    fn row(n: usize, health: Health, groups: &[&str]) -> RelationshipRow {
        RelationshipRow {
            trust_domain: format!("td{n}.test"),
            profile: "https_web".into(),
            bundle_endpoint_url: format!("https://td{n}.test/"),
            source: FetchSource::Direct,
            endpoint_spiffe_id: None,
            accept_empty_bundle: false,
            require_sequence: false,
            has_extra_ca: false,
            status: status(None, 0, None, SystemTime::UNIX_EPOCH),
            last_success_age_secs: None,
            sequence: None,
            earliest_expiry: None,
            health,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    #[test]
    fn the_map_groups_many_trust_domains() {
        let few: Vec<_> = (0..3).map(|n| row(n, Health::Fresh, &[])).collect();
        let view = map(&few, MapGrouping::Auto);
        assert_eq!(view.grouped_by, "none");
        assert_eq!(view.nodes.len(), 3);
        assert_eq!(view.nodes[0].trust_domain.as_deref(), Some("td0.test"));

        let many: Vec<_> = (0..10_000)
            .map(|n| {
                let health = Health::ALL[n % 4];
                let group = format!("g{}", n % 100);
                row(n, health, &[group.as_str()])
            })
            .collect();
        let by_health = map(&many, MapGrouping::Auto);
        assert_eq!(by_health.grouped_by, "health");
        assert_eq!(by_health.nodes.len(), 4);
        assert_eq!(by_health.nodes[0].health, Health::Failing);
        assert_eq!(by_health.nodes[0].count, 2500);
        let by_group = map(&many, MapGrouping::Group);
        assert_eq!(by_group.grouped_by, "group");
        assert_eq!(by_group.nodes.len(), MAP_NODES);
        assert_eq!(
            by_group.nodes.iter().map(|n| n.count).sum::<usize>(),
            10_000
        );
    }

    #[test]
    fn next_rotation_follows_the_ca_schedule() {
        let created = SystemTime::UNIX_EPOCH + Duration::from_secs(600_000);
        let key = |kind: &str, state| KeyView {
            kind: kind.into(),
            id: "k".into(),
            state,
            created_at: Timestamp(created),
            not_after: Timestamp(created + Duration::from_secs(6000)),
        };
        let steps = next_rotations(&[
            key("x509", KeyState::Active),
            key("jwt", KeyState::Active),
            key("jwt", KeyState::Prepared),
        ]);
        assert_eq!(steps[0].step, "prepare");
        assert_eq!(steps[0].at.0, created + Duration::from_secs(3000));
        assert_eq!(steps[1].step, "activate");
        assert_eq!(steps[1].at.0, created + Duration::from_secs(5000));
    }
}
