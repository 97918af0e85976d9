//! The servers one run of `longpoll` or `realtime` loads, each with a blocking control
//! connection: the publisher's (`--url`) first, then any others its followers are spread over
//! (`longpoll --also-url`: several tethers sharing their topics in Redis, docs/scale-out.md).
//!
//! ```text
//!   warm-up   POST /publish/T on the first            -> seq S
//!   in step   GET /poll/T?cursor=S-1 on each other     until it answers with message S
//!   /stats    every server's, in order, in one reading -> summed (counts) or the longest (times)
//! ```
//!
//! Invariants:
//! - There is at least one server, and the first is the publisher's: every publish goes there.
//! - A run's figure is the sum of the servers' (`Readings::sum`); a time, the longest
//!   (`Readings::max`), since the servers work side by side.
//! - The followers start only once every server has the warm-up message: a server whose copy of
//!   the topic were still behind would answer their cursor with a `reset`.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{stat, Target, CONTROL_TIMEOUT};
use crate::client::{Client, Response};

/// How long a poll that checks a server is in step may be held (tether holds one at least 1 s).
const IN_STEP_HOLD: Duration = Duration::from_secs(1);
/// Between two checks of a server that answered, but not yet with the warm-up.
const IN_STEP_RETRY: Duration = Duration::from_millis(50);

pub struct Servers {
    targets: Vec<Target>,
    controls: Vec<Client>,
}

/// One `/stats` of every server, in the order of `Servers::targets`.
pub struct Readings(Vec<Value>);

impl Servers {
    /// The publisher's server, then the `others`.
    pub fn new(publisher: Target, others: Vec<Target>) -> Servers {
        let targets: Vec<Target> = std::iter::once(publisher).chain(others).collect();
        let controls = targets.iter().map(Target::control).collect();
        Servers { targets, controls }
    }

    /// Every server, the publisher's first.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// The publisher's server and its control connection.
    pub fn publisher(&mut self) -> (&Target, &mut Client) {
        (&self.targets[0], &mut self.controls[0])
    }

    /// Every server's `/stats`.
    ///
    /// # Errors
    ///
    /// When one does not answer 200 with JSON.
    pub fn stats(&mut self) -> Result<Readings, String> {
        let each = self.targets.iter().zip(&mut self.controls).map(|(target, control)| target.stats(control));
        each.collect::<Result<_, _>>().map(Readings)
    }

    /// Waits until every server but the publisher's has message `seq` of `topic` (published on
    /// the publisher's): asks each for what follows `seq - 1` until the answer carries `seq`.
    ///
    /// # Errors
    ///
    /// When a server fails to answer, or still lacks the message after `CONTROL_TIMEOUT` (it
    /// does not share the publisher's topics).
    pub fn wait_in_step(&mut self, topic: &str, seq: u64) -> Result<(), String> {
        let hold = IN_STEP_HOLD.as_millis();
        for (target, control) in self.targets.iter().zip(&mut self.controls).skip(1) {
            let path = format!("{}/poll/{topic}?cursor={}&timeout={hold}ms", target.base_path(), seq.saturating_sub(1));
            let deadline = Instant::now() + CONTROL_TIMEOUT;
            while !has_message(&control.get(&path).map_err(|e| format!("GET {path}: {e}"))?, seq) {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "{} has no message {seq} of {topic} {CONTROL_TIMEOUT:?} after it was published to {}: \
                         do they share their topics (--redis)?",
                        target.addr, self.targets[0].addr
                    ));
                }
                std::thread::sleep(IN_STEP_RETRY);
            }
        }
        Ok(())
    }
}

/// A poll's answer that carries message `seq`: its `cursor` has reached it.
fn has_message(answer: &Response, seq: u64) -> bool {
    let json = serde_json::from_slice::<Value>(&answer.body).unwrap_or_default();
    answer.status == 200 && json["status"] == "ok" && json["cursor"].as_u64().is_some_and(|cursor| cursor >= seq)
}

impl Readings {
    /// A count summed over the servers (0 where absent).
    pub fn sum(&self, pointer: &str) -> u64 {
        self.0.iter().map(|stats| stat(stats, pointer)).sum()
    }

    /// The longest of the servers' figures at `pointer` (0 where absent).
    pub fn max(&self, pointer: &str) -> u64 {
        self.0.iter().map(|stats| stat(stats, pointer)).max().unwrap_or(0)
    }

    /// Each server's `/stats`, in order.
    pub fn each(&self) -> &[Value] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_are_summed_and_times_are_the_longest() {
        let readings = Readings(vec![
            json!({"polls": {"held": 3, "last_fanout_us": 40}}),
            json!({"polls": {"held": 2, "last_fanout_us": 70}}),
            json!({}),
        ]);
        assert_eq!((readings.sum("/polls/held"), readings.max("/polls/last_fanout_us")), (5, 70));
        assert_eq!((readings.sum("/nothing"), Readings(Vec::new()).max("/polls/held")), (0, 0));
    }

    #[test]
    fn only_an_answer_that_reached_the_message_is_in_step() {
        let answer = |status: u16, body: &str| Response {
            status,
            reason: String::new(),
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            close: false,
        };
        let cases = [
            (answer(200, r#"{"status":"ok","cursor":7}"#), true),
            (answer(200, r#"{"status":"ok","cursor":8}"#), true),
            (answer(200, r#"{"status":"timeout","cursor":6}"#), false),
            (answer(200, r#"{"status":"reset","cursor":7}"#), false),
            (answer(503, r#"{"status":"ok","cursor":7}"#), false),
            (answer(200, "not json"), false),
        ];
        for (response, in_step) in cases {
            assert_eq!(has_message(&response, 7), in_step, "{}", String::from_utf8_lossy(&response.body));
        }
    }
}
