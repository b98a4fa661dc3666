//! Integration tests: real servers, real HTTP.

mod common;
mod console;

mod account;
mod admin_register;
mod admin_rooms;
mod admin_users;
mod bounds;
mod conformance;
mod devices;
mod directory;
mod discovery;
mod e2ee;
mod ending;
mod errors;
mod federation;
mod guests;
mod invite_codes;
mod login;
mod media;
mod operations;
mod persistence;
mod privacy;
mod process;
mod profile_and_data;
mod push;
mod pushers;
mod register;
mod relations;
mod retention;
mod rooms;
mod search;
mod sliding_sync;
mod sync;
mod url_preview;
