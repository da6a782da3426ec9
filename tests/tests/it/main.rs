//! Integration tests: the real `tern` binary on loopback, driven by raw clients and `tern ctl`.

mod admin;
mod admin_data;
mod bad_input;
mod bosh;
mod c2s;
mod config;
mod data;
mod dev_mesh;
mod edge;
mod grt;
mod mesh;
mod mesh_pki;
mod muc_admin;
mod offline;
mod pep;
mod postgres;
mod roster;
mod stream_management;
mod websocket;
