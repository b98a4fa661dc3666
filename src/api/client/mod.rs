//! Client-Server API handlers, one file per spec module.

mod account;
mod account_data;
pub(crate) mod admin;
mod backup;
mod devices;
pub(crate) mod directory;
mod discovery;
mod end_room;
mod filter;
mod invite_codes;
mod keys;
mod legacy;
mod membership;
mod openid;
mod presence;
mod profile;
mod push;
mod pushers;
mod receipts;
mod redact;
mod relations;
mod report;
mod room;
mod search;
mod session;
mod space;
mod state;
mod sync;
mod tags;
pub mod third_party;
mod to_device;
mod typing;
mod user_directory;
mod voip;

use std::{any::TypeId, sync::Arc};

use axum::{Extension, Router};

use crate::{api::ruma::GuestPolicy, services::Services};

pub use account::{MAX_PASSWORD_LEN, check_password_length};
pub use room::{gap_token, parse_gap};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    let router = discovery::routes(router);
    let router = legacy::routes(router);
    let router = account::routes(router);
    let router = admin::routes(router);
    let router = session::routes(router);
    let router = devices::routes(router);
    let router = profile::routes(router);
    let router = account_data::routes(router);
    let router = filter::routes(router);
    let router = room::routes(router);
    let router = state::routes(router);
    let router = redact::routes(router);
    let router = directory::routes(router);
    let router = report::routes(router);
    let router = end_room::routes(invite_codes::routes(router));
    let router = sync::routes(router);
    let router = space::routes(router);
    let router = receipts::routes(router);
    let router = typing::routes(router);
    let router = presence::routes(router);
    let router = push::routes(router);
    let router = pushers::routes(router);
    let router = relations::routes(router);
    let router = tags::routes(router);
    let router = user_directory::routes(router);
    let router = voip::routes(router);
    let router = keys::routes(router);
    let router = to_device::routes(router);
    let router = backup::routes(router);
    let router = openid::routes(router);
    let router = search::routes(router);
    membership::routes(router).layer(Extension(GuestPolicy(guest_may_call)))
}

/// The endpoints a guest may call (with a token), as in Synapse: reading
/// and syncing, joining, leaving and sending in rooms that admit guests,
/// the display name, devices, keys and to-device messages. Anywhere else a
/// guest's token gets 403 `M_GUEST_ACCESS_FORBIDDEN`.
fn guest_may_call(endpoint: TypeId) -> bool {
    use ruma::api::client::{
        account::whoami, context::get_context, device, directory, discovery::get_capabilities, keys,
        membership, message, profile, relations, room::get_room_event, state, sync::sync_events,
        threads::get_threads, to_device::send_event_to_device,
    };
    [
        TypeId::of::<sync_events::v3::Request>(),
        TypeId::of::<sync_events::v5::Request>(),
        TypeId::of::<self::sync::endpoints::v4_sync::Request>(),
        TypeId::of::<legacy::endpoints::events::Request>(),
        TypeId::of::<legacy::endpoints::room_initial_sync::Request>(),
        TypeId::of::<message::get_message_events::v3::Request>(),
        TypeId::of::<message::send_message_event::v3::Request>(),
        TypeId::of::<self::state::post_send::Request>(),
        TypeId::of::<state::get_state_events::v3::Request>(),
        TypeId::of::<state::get_state_event_for_key::v3::Request>(),
        TypeId::of::<state::send_state_event::v3::Request>(),
        TypeId::of::<get_room_event::v3::Request>(),
        TypeId::of::<get_context::v3::Request>(),
        TypeId::of::<relations::get_relating_events::v1::Request>(),
        TypeId::of::<relations::get_relating_events_with_rel_type::v1::Request>(),
        TypeId::of::<relations::get_relating_events_with_rel_type_and_event_type::v1::Request>(),
        TypeId::of::<get_threads::v1::Request>(),
        TypeId::of::<ruma::api::client::space::get_hierarchy::v1::Request>(),
        TypeId::of::<membership::get_member_events::v3::Request>(),
        TypeId::of::<membership::joined_rooms::v3::Request>(),
        TypeId::of::<membership::join_room_by_id::v3::Request>(),
        TypeId::of::<membership::join_room_by_id_or_alias::v3::Request>(),
        TypeId::of::<membership::leave_room::v3::Request>(),
        TypeId::of::<directory::get_public_rooms_filtered::v3::Request>(),
        // The handlers let a guest change only the display name.
        TypeId::of::<profile::set_profile_field::v3::Request>(),
        TypeId::of::<profile::delete_profile_field::v3::Request>(),
        TypeId::of::<whoami::v3::Request>(),
        TypeId::of::<get_capabilities::v3::Request>(),
        TypeId::of::<device::get_devices::v3::Request>(),
        TypeId::of::<device::get_device::v3::Request>(),
        TypeId::of::<device::update_device::v3::Request>(),
        TypeId::of::<keys::upload_keys::v3::Request>(),
        TypeId::of::<keys::get_keys::v3::Request>(),
        TypeId::of::<keys::claim_keys::v3::Request>(),
        TypeId::of::<keys::get_key_changes::v3::Request>(),
        TypeId::of::<keys::upload_signatures::v3::Request>(),
        TypeId::of::<send_event_to_device::v3::Request>(),
        // Calls (`turn.allow_guests` decides in the handler).
        TypeId::of::<ruma::api::client::voip::get_turn_server_info::v3::Request>(),
    ]
    .contains(&endpoint)
}
