//! Server discovery and capabilities: `/versions`, `/.well-known/matrix/client`,
//! `/capabilities`.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::api::client::discovery::{
    discover_homeserver::{self, HomeserverInfo},
    get_capabilities::{
        self,
        v3::{
            Capabilities, ChangePasswordCapability, ProfileFieldsCapability, RoomVersionStability,
            RoomVersionsCapability, ThirdPartyIdChangesCapability,
        },
    },
    get_supported_versions,
};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter, ensure},
    rooms::{DEFAULT_ROOM_VERSION, SUPPORTED_ROOM_VERSIONS},
    services::Services,
};

/// The Client-Server API versions Hearth speaks.
const VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9",
    "v1.10", "v1.11", "v1.12",
];

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(versions)
        .ruma(well_known)
        .ruma(server_well_known)
        .ruma_shaped(capabilities, shape_capabilities)
}

/// `GET /.well-known/matrix/server`: where other servers should send this
/// server's federation traffic (`well_known.server`); 404 when unset.
async fn server_well_known(
    req: Ruma<ruma::api::federation::discovery::discover_homeserver::Request>,
) -> Result<ruma::api::federation::discovery::discover_homeserver::Response> {
    let delegated = req
        .services
        .config
        .well_known
        .server
        .as_deref()
        .and_then(|name| ruma::OwnedServerName::try_from(name).ok())
        .ok_or_else(|| Error::not_found("No server well-known is configured"))?;
    Ok(ruma::api::federation::discovery::discover_homeserver::Response::new(delegated))
}

async fn versions(_: Ruma<get_supported_versions::Request>) -> Result<get_supported_versions::Response> {
    let mut response =
        get_supported_versions::Response::new(VERSIONS.iter().map(|v| (*v).to_owned()).collect());
    // Simplified sliding sync (MSC4186): what Element X looks for.
    response.unstable_features.insert("org.matrix.simplified_msc3575".to_owned(), true);
    Ok(response)
}

async fn well_known(req: Ruma<discover_homeserver::Request>) -> Result<discover_homeserver::Response> {
    let base_url = req
        .services
        .config
        .well_known
        .client
        .clone()
        .ok_or_else(|| Error::not_found("No client well-known is configured"))?;
    Ok(discover_homeserver::Response::new(HomeserverInfo::new(base_url)))
}

/// ruma leaves out capabilities at their default (enabled); clients and
/// SyTest look for them, and Synapse always lists them.
fn shape_capabilities(body: &mut serde_json::Value) {
    let caps = &mut body["capabilities"];
    for key in ["m.change_password", "m.set_displayname", "m.set_avatar_url"] {
        ensure(caps, key, || serde_json::json!({"enabled": true}));
    }
}

// `m.set_displayname` and `m.set_avatar_url` are deprecated in favour of
// `m.profile_fields`, but clients still read them: serve both.
#[allow(deprecated)]
async fn capabilities(_: Ruma<get_capabilities::v3::Request>) -> Result<get_capabilities::v3::Response> {
    let mut caps = Capabilities::new();
    caps.change_password = ChangePasswordCapability::new(true);
    caps.set_displayname = get_capabilities::v3::SetDisplayNameCapability::new(true);
    caps.set_avatar_url = get_capabilities::v3::SetAvatarUrlCapability::new(true);
    caps.profile_fields = Some(ProfileFieldsCapability::new(true));
    caps.thirdparty_id_changes = ThirdPartyIdChangesCapability::new(false);
    let available: BTreeMap<_, _> =
        SUPPORTED_ROOM_VERSIONS.iter().map(|v| (v.clone(), RoomVersionStability::Stable)).collect();
    caps.room_versions = RoomVersionsCapability::new(DEFAULT_ROOM_VERSION, available);
    Ok(get_capabilities::v3::Response::new(caps))
}
