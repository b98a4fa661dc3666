//! The deprecated v1 forms of `send_join`, `send_leave` and `invite`, both
//! served and sent: their body is the event itself, their answer
//! `[200, body]` (MSC1802). ruma describes v1 `invite` only field by field,
//! and the others not at all. Synapse still serves and falls back to them.

use ruma::{
    OwnedEventId, OwnedRoomId,
    api::{federation::authentication::ServerSignatures, request, response},
    metadata,
};
use serde_json::value::RawValue;

/// The answer, `[200, body]`.
#[response]
pub struct Response {
    #[ruma_api(body)]
    pub body: Box<RawValue>,
}

pub mod send_join {
    pub use super::Response;
    use super::*;

    metadata! {
        method: PUT,
        authentication: ServerSignatures,
        rate_limited: false,
        path: "/_matrix/federation/v1/send_join/{room_id}/{event_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        #[ruma_api(path)]
        pub event_id: OwnedEventId,
        #[ruma_api(body)]
        pub pdu: Box<RawValue>,
    }
}

pub mod invite {
    pub use super::Response;
    use super::*;

    metadata! {
        method: PUT,
        authentication: ServerSignatures,
        rate_limited: false,
        path: "/_matrix/federation/v1/invite/{room_id}/{event_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        #[ruma_api(path)]
        pub event_id: OwnedEventId,
        #[ruma_api(body)]
        pub pdu: Box<RawValue>,
    }
}

pub mod send_leave {
    pub use super::Response;
    use super::*;

    metadata! {
        method: PUT,
        authentication: ServerSignatures,
        rate_limited: false,
        path: "/_matrix/federation/v1/send_leave/{room_id}/{event_id}",
    }

    #[request]
    pub struct Request {
        #[ruma_api(path)]
        pub room_id: OwnedRoomId,
        #[ruma_api(path)]
        pub event_id: OwnedEventId,
        #[ruma_api(body)]
        pub pdu: Box<RawValue>,
    }
}

/// An answer in the v1 shape: `[200, body]`.
pub fn wrap(body: serde_json::Value) -> crate::Result<Response> {
    let raw =
        serde_json::value::to_raw_value(&serde_json::json!([200, body])).map_err(crate::Error::internal)?;
    Ok(Response { body: raw })
}

/// The body of an answer in the v1 shape.
pub fn unwrap<T: serde::de::DeserializeOwned>(response: &Response) -> Result<T, String> {
    let (_status, body): (u16, T) =
        serde_json::from_str(response.body.get()).map_err(|e| format!("not a v1 answer: {e}"))?;
    Ok(body)
}
