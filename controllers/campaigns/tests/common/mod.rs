//! Real receivers for the delivery tests — an HTTP server and an SMTP server on 127.0.0.1 —
//! and the messages and Channel specs they are tested with.

#![allow(dead_code)] // each test binary uses a part

pub mod http_receiver;
pub mod smtp_sink;

use flotilla_campaigns::channel::{Addressee, Message};
use flotilla_crds::channel::ChannelSpec;

/// A message to Ada from campaign `spring-sale`.
pub fn message(id: &str) -> Message {
    Message {
        id: id.to_owned(),
        campaign: "spring-sale".into(),
        variant: "b".into(),
        recipient: Addressee {
            name: Some("Ada Lovelace".into()),
            email: Some("ada@example.com".into()),
        },
        subject: Some("Your trial ends soon".into()),
        body: "Hello Ada,\nyour trial ends on Friday.".into(),
        unsubscribe_url: format!("https://flotilla.example/unsubscribe/{id}"),
    }
}

/// A Channel spec from its JSON form, as a user would apply it.
pub fn spec(json: serde_json::Value) -> ChannelSpec {
    let spec: ChannelSpec = serde_json::from_value(json).expect("a Channel spec");
    spec.validate().expect("a valid Channel spec");
    spec
}
