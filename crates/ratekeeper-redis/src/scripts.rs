//! The Lua scripts, one per operation, each run atomically by Redis. Every
//! script is `common.lua` (keys, capacity, grants, the queue) followed by
//! its own body.

use redis::Script;

const COMMON: &str = include_str!("lua/common.lua");

fn script(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

/// Every operation's script.
pub struct Scripts {
    pub create: Script,
    pub update: Script,
    pub delete: Script,
    pub reset: Script,
    pub acquire: Script,
    pub cancel: Script,
    pub release: Script,
    pub renew: Script,
    pub tick: Script,
    pub status: Script,
    pub read: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Scripts {
            create: script(include_str!("lua/create.lua")),
            update: script(include_str!("lua/update.lua")),
            delete: script(include_str!("lua/delete.lua")),
            reset: script(include_str!("lua/reset.lua")),
            acquire: script(include_str!("lua/acquire.lua")),
            cancel: script(include_str!("lua/cancel.lua")),
            release: script(include_str!("lua/release.lua")),
            renew: script(include_str!("lua/renew.lua")),
            tick: script(include_str!("lua/tick.lua")),
            status: script(include_str!("lua/status.lua")),
            read: script(include_str!("lua/read.lua")),
        }
    }
}
