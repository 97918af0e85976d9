//! Which notices are news: the merge of a sync (read on the command connection) with the
//! notices (heard on the subscription), so that after a `Synced` each topic's messages are
//! reported once, in order, without a gap.
//!
//! The difficulty: the sync reads a topic at some instant while the subscription keeps
//! delivering notices, and on two connections nothing says which notice the read already
//! contains. Comparing seqs is not enough across lives: a notice of an expired life and one of
//! the life that replaced it both start at seq 1. So each read (read.lua) publishes a *read mark*
//! on the news channel in the same atomic script. Redis runs scripts one at a time and delivers
//! a channel's messages in the order they were published, so on the subscription every notice
//! about a topic *before* its mark is in the read (or older), and every notice *after* it is new.
//!
//! Invariants:
//! - A topic the sync read waits for its mark (`AwaitingMark`); until then its notices are
//!   skipped. Marks of another sync (an earlier one of ours, or another process's) are ignored.
//! - A topic past its mark, or that the sync never read (it did not exist yet when SCAN passed),
//!   is `Following`: a notice continues its life (`seq` = last + 1), starts a new life
//!   (another epoch at `seq` 1), repeats one already reported (skipped), or shows that
//!   notices were lost: then the caller must sync again (`Verdict::Resync`), never paper over
//!   the hole.
//! - A topic not heard of for `quiet` (longer than `--topic-idle-timeout`, so Redis has expired
//!   its keys and its next append starts a new life) is forgotten, so the map does not grow
//!   with every name ever published. A topic with no place is taken as it comes.
//!
//! Pure: no I/O, no clock (the caller passes `now`), so the tests below are tables.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::notice::Notice;
use super::Report;

/// One life of a topic as this process knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Life {
    pub epoch: Arc<str>,
    pub last_seq: u64,
}

/// Where this process stands in one topic's history.
#[derive(Debug)]
enum Place {
    /// Read by the current sync (as `life`, or already gone: `None`), its mark not heard yet.
    AwaitingMark { life: Option<Life> },
    /// Every notice from here on is newer than `life`.
    Following { life: Life, heard: Instant },
}

/// What to do with one notice.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// News: report it.
    Deliver(Report),
    /// Already reported, in the sync or before; or not about us.
    Skip,
    /// Notices were lost: what this process has is no longer true; sync again.
    Resync(String),
}

/// Every topic's place since the last sync.
#[derive(Debug)]
pub struct Timeline {
    /// This sync's id, as its read marks carry it.
    sync: String,
    places: HashMap<Arc<str>, Place>,
}

impl Timeline {
    /// After sync `sync` read `reads`: each topic it found, with its life (or `None` if it was
    /// gone by the time it was read).
    pub fn new(sync: &str, reads: impl IntoIterator<Item = (Arc<str>, Option<Life>)>) -> Timeline {
        let places = reads.into_iter().map(|(topic, life)| (topic, Place::AwaitingMark { life })).collect();
        Timeline { sync: sync.to_string(), places }
    }

    /// Topics whose read mark has not been heard yet.
    pub fn awaiting_marks(&self) -> usize {
        self.places.values().filter(|place| matches!(place, Place::AwaitingMark { .. })).count()
    }

    /// Topics this process has a place for.
    pub fn len(&self) -> usize {
        self.places.len()
    }

    /// Judges one notice, in the order the subscription delivered it.
    pub fn observe(&mut self, notice: Notice<'_>, now: Instant) -> Verdict {
        match notice {
            Notice::ReadMark { sync, topic } => {
                if sync != self.sync {
                    return Verdict::Skip;
                }
                if let Some(Place::AwaitingMark { life }) = self.places.get_mut(topic) {
                    match life.take() {
                        Some(life) => self.set(topic, Place::Following { life, heard: now }),
                        None => {
                            self.places.remove(topic);
                        }
                    }
                }
                Verdict::Skip
            }
            Notice::Appended { topic, epoch, seq, data } => {
                let (name, life) = match self.places.get_key_value(topic) {
                    None => (Arc::from(topic), Life { epoch: Arc::from(epoch), last_seq: seq }),
                    Some((_, Place::AwaitingMark { .. })) => return Verdict::Skip,
                    Some((name, Place::Following { life, .. })) => {
                        let same_life = *life.epoch == *epoch;
                        if same_life && seq <= life.last_seq {
                            return Verdict::Skip;
                        }
                        if same_life && seq != life.last_seq + 1 || !same_life && seq != 1 {
                            return Verdict::Resync(format!(
                                "topic {topic}: notice {epoch}/{seq} after {}/{}: notices were lost",
                                life.epoch, life.last_seq
                            ));
                        }
                        let epoch = if same_life { life.epoch.clone() } else { Arc::from(epoch) };
                        (name.clone(), Life { epoch, last_seq: seq })
                    }
                };
                let report =
                    Report::Appended { topic: name.clone(), epoch: life.epoch.clone(), seq, data: Arc::from(data) };
                self.places.insert(name, Place::Following { life, heard: now });
                Verdict::Deliver(report)
            }
        }
    }

    /// Forgets the topics not heard of for longer than `quiet`; returns how many.
    pub fn forget_quiet(&mut self, now: Instant, quiet: Duration) -> usize {
        let before = self.places.len();
        self.places.retain(|_, place| match place {
            Place::AwaitingMark { .. } => true,
            Place::Following { heard, .. } => now.saturating_duration_since(*heard) <= quiet,
        });
        before - self.places.len()
    }

    fn set(&mut self, topic: &str, place: Place) {
        if let Some(slot) = self.places.get_mut(topic) {
            *slot = place;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appended(topic: &'static str, epoch: &'static str, seq: u64) -> Notice<'static> {
        Notice::Appended { topic, epoch, seq, data: "x" }
    }

    fn mark(sync: &'static str, topic: &'static str) -> Notice<'static> {
        Notice::ReadMark { sync, topic }
    }

    fn life(epoch: &str, last_seq: u64) -> Option<Life> {
        Some(Life { epoch: Arc::from(epoch), last_seq })
    }

    /// Runs a table of steps after a sync (id "51") that read `reads`: each step a notice in and
    /// the verdict out (`D` deliver, `S` skip, `R` resync).
    fn run(reads: Vec<(&str, Option<Life>)>, steps: &[(Notice<'static>, char)]) -> Timeline {
        let mut timeline = Timeline::new("51", reads.into_iter().map(|(topic, life)| (Arc::from(topic), life)));
        let now = Instant::now();
        for (i, (notice, expected)) in steps.iter().enumerate() {
            let verdict = timeline.observe(notice.clone(), now);
            let got = match &verdict {
                Verdict::Deliver(Report::Appended { topic, epoch, seq, .. }) => {
                    let Notice::Appended { topic: t, epoch: e, seq: s, .. } = notice else {
                        panic!("delivered a mark")
                    };
                    assert_eq!((&**topic, &**epoch, *seq), (*t, *e, *s), "step {i}");
                    'D'
                }
                Verdict::Deliver(other) => panic!("step {i}: {other:?}"),
                Verdict::Skip => 'S',
                Verdict::Resync(_) => 'R',
            };
            assert_eq!(got, *expected, "step {i}: {notice:?} gave {verdict:?}");
        }
        timeline
    }

    #[test]
    fn notices_before_a_topics_read_mark_are_in_the_sync_and_after_it_are_new() {
        run(
            vec![("a", life("e1", 3))],
            &[
                (appended("a", "e1", 2), 'S'),
                (appended("a", "e1", 3), 'S'),
                (mark("51", "a"), 'S'),
                (appended("a", "e1", 3), 'S'), // a repeat of what the read held
                (appended("a", "e1", 4), 'D'),
                (appended("a", "e1", 5), 'D'),
            ],
        );
    }

    #[test]
    fn an_older_life_before_the_mark_does_not_undo_the_newer_one_read() {
        // e0 expired; e1 began at 1 before the read: the stale e0 notice must not replace e1.
        run(
            vec![("a", life("e1", 1))],
            &[
                (appended("a", "e0", 1), 'S'),
                (appended("a", "e1", 1), 'S'),
                (mark("51", "a"), 'S'),
                (appended("a", "e1", 2), 'D'),
            ],
        );
    }

    #[test]
    fn after_the_mark_a_new_life_starts_at_one_and_anything_else_is_a_loss() {
        let steps = [
            (mark("51", "a"), 'S'),
            (appended("a", "e2", 1), 'D'),
            (appended("a", "e2", 2), 'D'),
            (appended("a", "e3", 2), 'R'),
        ];
        run(vec![("a", life("e1", 7))], &steps);
        run(vec![("a", life("e1", 7))], &[(mark("51", "a"), 'S'), (appended("a", "e1", 9), 'R')]);
    }

    #[test]
    fn marks_of_other_syncs_are_ignored() {
        run(
            vec![("a", life("e1", 1))],
            &[(mark("50", "a"), 'S'), (appended("a", "e1", 2), 'S'), (mark("51", "b"), 'S')],
        );
    }

    #[test]
    fn a_topic_the_sync_did_not_read_is_taken_as_it_comes() {
        let timeline = run(
            vec![],
            &[
                (appended("new", "e1", 1), 'D'),
                (appended("new", "e1", 2), 'D'),
                (appended("late", "e5", 40), 'D'),
                (appended("late", "e5", 41), 'D'),
            ],
        );
        assert_eq!(timeline.len(), 2);
    }

    #[test]
    fn a_topic_gone_when_read_is_forgotten_at_its_mark() {
        let timeline = run(
            vec![("gone", None)],
            &[(appended("gone", "e1", 4), 'S'), (mark("51", "gone"), 'S'), (appended("gone", "e2", 1), 'D')],
        );
        assert_eq!(timeline.awaiting_marks(), 0);
    }

    #[test]
    fn topics_are_independent() {
        run(
            vec![("a", life("ea", 2)), ("b", life("eb", 5))],
            &[
                (mark("51", "b"), 'S'),
                (appended("a", "ea", 2), 'S'),
                (appended("b", "eb", 6), 'D'),
                (mark("51", "a"), 'S'),
                (appended("a", "ea", 3), 'D'),
            ],
        );
    }

    #[test]
    fn quiet_topics_are_forgotten_but_not_those_awaiting_their_mark() {
        let mut timeline = Timeline::new("51", [(Arc::from("waiting"), life("e", 1))]);
        let start = Instant::now();
        assert!(matches!(timeline.observe(appended("old", "e", 1), start), Verdict::Deliver(_)));
        let later = start + Duration::from_secs(5);
        assert!(matches!(timeline.observe(appended("fresh", "e", 1), later), Verdict::Deliver(_)));
        assert_eq!(timeline.forget_quiet(later, Duration::from_secs(2)), 1);
        assert_eq!(timeline.len(), 2, "fresh and waiting stay");
        assert_eq!(timeline.awaiting_marks(), 1);
        // A forgotten topic is taken as it comes again.
        assert!(matches!(timeline.observe(appended("old", "f", 1), later), Verdict::Deliver(_)));
    }
}
