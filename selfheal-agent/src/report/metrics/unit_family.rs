//! A family of per-unit series kept as plain numbers and made into a metric family only when
//! `/metrics` is scraped. A prometheus `GaugeVec` child keeps its own copy of the family's
//! description (name, help, label names) and its label pairs: ~600 bytes a series, 13 MiB for
//! 1,000 units with their ~20 series each. Here a series is its unit's name and a number.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use prometheus::{
    core::{Collector, Desc},
    proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
};

/// What the series' values are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    /// Only goes up ([`UnitFamily::inc`]).
    Counter,
}

/// Series labelled by `unit` and, when the family has one, a second label whose values are
/// fixed names (a resource, a stall kind). Clones share the series (one is registered).
#[derive(Clone)]
pub struct UnitFamily(Arc<Inner>);

struct Inner {
    desc: Desc,
    kind: Kind,
    second: Option<&'static str>,
    values: Mutex<BTreeMap<(String, &'static str), f64>>,
}

impl UnitFamily {
    /// `second`: the second label's name, if the family has one.
    pub fn new(name: &str, help: &str, kind: Kind, second: Option<&'static str>) -> Self {
        let labels = std::iter::once("unit")
            .chain(second)
            .map(str::to_owned)
            .collect();
        Self(Arc::new(Inner {
            desc: Desc::new(name.to_owned(), help.to_owned(), labels, Default::default())
                .expect("metric names are valid (see the tests)"),
            kind,
            second,
            values: Mutex::default(),
        }))
    }

    fn values(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, &'static str), f64>> {
        // A panic while holding it leaves plain numbers behind: still good to read.
        self.0.values.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the series (`second` is "" in a family without a second label).
    pub fn set(&self, unit: &str, second: &'static str, value: f64) {
        let mut values = self.values();
        match values.get_mut(&(unit.to_owned(), second)) {
            Some(v) => *v = value,
            None => {
                values.insert((unit.to_owned(), second), value);
            }
        }
    }

    /// Adds `by` to the series, created at 0.
    pub fn inc_by(&self, unit: &str, second: &'static str, by: f64) {
        *self
            .values()
            .entry((unit.to_owned(), second))
            .or_insert(0.0) += by;
    }

    pub fn inc(&self, unit: &str, second: &'static str) {
        self.inc_by(unit, second, 1.0);
    }

    pub fn get(&self, unit: &str, second: &'static str) -> Option<f64> {
        self.values().get(&(unit.to_owned(), second)).copied()
    }

    /// Removes one series; absent already is fine.
    pub fn remove(&self, unit: &str, second: &'static str) {
        self.values().remove(&(unit.to_owned(), second));
    }

    /// Removes every series of the unit.
    pub fn forget(&self, unit: &str) {
        self.values().retain(|(u, _), _| u != unit);
    }
}

impl Collector for UnitFamily {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let pair = |name: &str, value: &str| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_owned());
            pair.set_value(value.to_owned());
            pair
        };
        let metrics = self
            .values()
            .iter()
            .map(|((unit, second), value)| {
                let mut labels = vec![pair("unit", unit)];
                labels.extend(self.0.second.map(|name| pair(name, second)));
                // By name, as prometheus's own families render them.
                labels.sort_by(|a, b| a.name().cmp(b.name()));
                let mut metric = Metric::from_label(labels);
                match self.0.kind {
                    Kind::Gauge => {
                        let mut gauge = Gauge::default();
                        gauge.set_value(*value);
                        metric.set_gauge(gauge);
                    }
                    Kind::Counter => {
                        let mut counter = Counter::default();
                        counter.set_value(*value);
                        metric.set_counter(counter);
                    }
                }
                metric
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(self.0.desc.fq_name.clone());
        family.set_help(self.0.desc.help.clone());
        family.set_field_type(match self.0.kind {
            Kind::Gauge => MetricType::GAUGE,
            Kind::Counter => MetricType::COUNTER,
        });
        family.set_metric(metrics);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_set_added_to_removed_and_forgotten_by_unit() {
        let family = UnitFamily::new("t_seconds", "A test.", Kind::Gauge, Some("kind"));
        family.set("a.service", "x", 2.5);
        family.set("a.service", "y", 1.0);
        family.set("b.service", "x", 3.0);
        family.inc_by("b.service", "x", 1.0);
        assert_eq!(family.get("b.service", "x"), Some(4.0));
        family.remove("a.service", "y");
        assert_eq!(family.get("a.service", "y"), None);
        let collected = family.collect();
        let metrics = collected[0].get_metric();
        assert_eq!(metrics.len(), 2);
        // Labels by name, as prometheus renders its own.
        assert_eq!(metrics[0].get_label()[0].value(), "x");
        assert_eq!(metrics[0].get_label()[1].value(), "a.service");
        family.forget("a.service");
        assert_eq!(family.get("a.service", "x"), None);
        assert_eq!(family.get("b.service", "x"), Some(4.0));
    }
}
