//! Bindings of the frozen `sluice:destination@0.1.1` (`wit/0.1/destination.wit`): a plugin
//! built against 0.1.x imports `http` and `log` at 0.1.x and exports the per-job `transform`.
//! Their types are the same shapes as 0.2's; `crate::compat` converts between the two.

wasmtime::component::bindgen!({
    path: "../../../wit/0.1/destination.wit",
    world: "destination",
    imports: { default: async },
    exports: { default: async },
});
