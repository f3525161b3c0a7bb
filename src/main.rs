//! The `pika-ttl-proxy` binary; see [`pika_ttl_proxy::app`].
fn main() -> std::process::ExitCode {
    pika_ttl_proxy::app::main_entry()
}
