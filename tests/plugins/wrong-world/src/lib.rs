//! A guest that implements a *different* `sluice:destination` world than the host's: its
//! `plugin` interface has no `send` and a `transform` with other parameter types. Loading it
//! must fail with the mismatch named, while every other plugin keeps working.

wit_bindgen::generate!({
    inline: r#"
        package sluice:destination@0.1.0;

        interface plugin {
            configure: func(config: string) -> result<_, string>;
            transform: func(context: string, event: string) -> result<list<list<u8>>, string>;
        }

        world destination {
            export plugin;
        }
    "#,
    world: "destination",
});

use exports::sluice::destination::plugin::Guest;

struct WrongWorld;

impl Guest for WrongWorld {
    fn configure(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn transform(_context: String, event: String) -> Result<Vec<Vec<u8>>, String> {
        Ok(vec![event.into_bytes()])
    }
}

export!(WrongWorld);
