//! The status wire format's fields in the library's order, shared by the plain
//! design's records and the serde floor.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One status: `State` is the status text, `Segment` and `Failure` the entries of
/// `completed_segments` and `errors`.
#[derive(Serialize, Deserialize)]
pub struct WireStatus<State, Segment, Failure> {
    pub task_id: String,
    pub status: State,
    pub progress: Map<String, Value>,
    pub completed_segments: Vec<Segment>,
    pub errors: Vec<Failure>,
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub completed_at: Option<f64>,
    pub error: Option<String>,
    pub revision: u64,
    pub queue_position: Option<u64>,
    pub cancel_requested: bool,
}
