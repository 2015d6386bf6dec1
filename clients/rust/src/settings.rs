//! The notification settings of a read state ([`Client::update_settings`]):
//! [`Settings`], [`Mute`] and [`Level`], and their typed readers on the
//! [`ReadState`] and [`StoredReadState`] messages.
//!
//! [`Client::update_settings`]: crate::Client::update_settings

use std::fmt;
use std::time::SystemTime;

use crate::ops::epoch_ms;
use crate::proto::{self, ReadState, StoredReadState};

/// A notification level: which unread messages of a read state count in the
/// summaries (`level` of the API).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Level {
    /// Every unread message counts (the default): the read state counts as an
    /// unread channel (or thread) and its mentions count.
    #[default]
    All,
    /// Only mentions count: the read state is never an unread channel, its
    /// mentions still count.
    Mentions,
    /// Nothing counts: neither unread nor mentions.
    Nothing,
}

impl Level {
    /// The API name: `all`, `mentions` or `nothing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::All => "all",
            Level::Mentions => "mentions",
            Level::Nothing => "nothing",
        }
    }

    /// The level of an API name; `None` for anything else.
    pub fn from_name(name: &str) -> Option<Level> {
        match name {
            "all" => Some(Level::All),
            "mentions" => Some(Level::Mentions),
            "nothing" => Some(Level::Nothing),
            _ => None,
        }
    }

    /// The level of an API name as the server sends it, read like prost reads
    /// an enum: an empty or unknown name is the default, [`Level::All`].
    fn from_reply(name: &str) -> Level {
        Level::from_name(name).unwrap_or_default()
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long a read state is muted (`muted_until` of the API). A muted read state
/// is not an unread channel (or thread), but its mentions still count, as in
/// Discord and Slack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mute {
    /// Not muted (`muted_until` 0): sent, it unmutes.
    Off,
    /// Muted until then, ms since the Unix epoch (in the past: not muted). At
    /// most [`Mute::FOREVER_MS`]; more is [`Error::InvalidArgument`] on
    /// `muted_until`.
    ///
    /// [`Error::InvalidArgument`]: crate::Error::InvalidArgument
    Until(u64),
    /// Muted until unmuted (`muted_until` 2^63-1, the JSON API's `null`).
    Forever,
}

impl Mute {
    /// The `muted_until` of [`Mute::Forever`]: 2^63-1.
    pub const FOREVER_MS: u64 = i64::MAX as u64;

    /// Muted until `at` ([`Mute::Until`] in ms since the epoch; [`Mute::Off`]
    /// before it).
    pub fn until(at: SystemTime) -> Mute {
        Mute::from_ms(epoch_ms(at).min(Mute::FOREVER_MS))
    }

    /// The `muted_until` value sent to the server.
    pub fn as_ms(self) -> u64 {
        match self {
            Mute::Off => 0,
            Mute::Until(ms) => ms,
            Mute::Forever => Mute::FOREVER_MS,
        }
    }

    /// The mute of a `muted_until` value (0: [`Mute::Off`], 2^63-1:
    /// [`Mute::Forever`]).
    pub fn from_ms(ms: u64) -> Mute {
        match ms {
            0 => Mute::Off,
            Mute::FOREVER_MS => Mute::Forever,
            ms => Mute::Until(ms),
        }
    }
}

/// A change of the notification settings of a read state
/// ([`Client::update_settings`](crate::Client::update_settings),
/// [`Op::update_settings`](crate::Op::update_settings)). A field left `None`
/// keeps its value; the default changes nothing (it still creates the read
/// state).
///
/// ```
/// use readstate_client::{Level, Mute, Settings};
///
/// // Mute for good, and count only mentions.
/// let settings = Settings::new().mute(Mute::Forever).level(Level::Mentions);
/// // The same, as a literal.
/// let same = Settings {
///     muted_until: Some(Mute::Forever),
///     level: Some(Level::Mentions),
///     at: None,
/// };
/// assert_eq!(settings, same);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Settings {
    /// The new mute; `None`: keep it.
    pub muted_until: Option<Mute>,
    /// The new level; `None`: keep it.
    pub level: Option<Level>,
    /// When the settings were made, ms since the Unix epoch; `None`: on arrival
    /// at the server. Per field, the newest wins: an older settings write (a
    /// redelivered one) changes nothing.
    pub at: Option<u64>,
}

impl Settings {
    /// Settings that change nothing (fill them with the builder methods).
    pub fn new() -> Settings {
        Settings::default()
    }

    /// These settings, muting as `mute` says ([`Mute::Off`] unmutes).
    #[must_use]
    pub fn mute(mut self, mute: Mute) -> Settings {
        self.muted_until = Some(mute);
        self
    }

    /// These settings, unmuting.
    #[must_use]
    pub fn unmute(self) -> Settings {
        self.mute(Mute::Off)
    }

    /// These settings, setting the level.
    #[must_use]
    pub fn level(mut self, level: Level) -> Settings {
        self.level = Some(level);
        self
    }

    /// These settings, made at `at` (sent as `at`, ms since the epoch).
    #[must_use]
    pub fn made_at(mut self, at: SystemTime) -> Settings {
        self.at = Some(epoch_ms(at));
        self
    }

    /// The request setting them on the read state of `user` in `channel`.
    pub(crate) fn request(self, user: u64, channel: u64) -> proto::UpdateSettingsRequest {
        proto::UpdateSettingsRequest {
            user_id: user,
            channel_id: channel,
            muted_until: self.muted_until.map(Mute::as_ms),
            level: self.level.map(|level| level.as_str().to_owned()),
            at: self.at,
        }
    }
}

impl ReadState {
    /// The notification level, typed (the `level` field; an empty or unknown
    /// name, as from an older server, is [`Level::All`]).
    pub fn level(&self) -> Level {
        Level::from_reply(&self.level)
    }
}

impl StoredReadState {
    /// The notification level, typed (the `level` field; an empty or unknown
    /// name is [`Level::All`]).
    pub fn level(&self) -> Level {
        Level::from_reply(&self.level)
    }

    /// The stored mute, typed (the `muted_until` field; whether it is still in
    /// effect depends on the time: see [`ReadState::muted`]).
    pub fn mute(&self) -> Mute {
        Mute::from_ms(self.muted_until)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn levels_have_their_api_names() {
        for level in [Level::All, Level::Mentions, Level::Nothing] {
            assert_eq!(Level::from_name(level.as_str()), Some(level));
            assert_eq!(level.to_string(), level.as_str());
        }
        assert_eq!(Level::from_name("loud"), None);
        assert_eq!(Level::from_reply(""), Level::All);
        assert_eq!(Level::default(), Level::All);
    }

    #[test]
    fn mutes_are_muted_until_values() {
        for mute in [Mute::Off, Mute::Until(1234), Mute::Forever] {
            assert_eq!(Mute::from_ms(mute.as_ms()), mute);
        }
        assert_eq!(Mute::Forever.as_ms(), 9_223_372_036_854_775_807);
        assert_eq!(Mute::until(UNIX_EPOCH), Mute::Off);
        assert_eq!(
            Mute::until(UNIX_EPOCH + Duration::from_millis(5)),
            Mute::Until(5)
        );
    }

    #[test]
    fn settings_fill_the_request() {
        assert_eq!(
            Settings::new().request(1, 2),
            proto::UpdateSettingsRequest {
                user_id: 1,
                channel_id: 2,
                muted_until: None,
                level: None,
                at: None,
            }
        );
        let settings = Settings::new()
            .mute(Mute::Until(99))
            .level(Level::Nothing)
            .made_at(UNIX_EPOCH + Duration::from_millis(7));
        assert_eq!(
            settings.request(1, 2),
            proto::UpdateSettingsRequest {
                user_id: 1,
                channel_id: 2,
                muted_until: Some(99),
                level: Some("nothing".to_owned()),
                at: Some(7),
            }
        );
        assert_eq!(Settings::new().unmute().muted_until, Some(Mute::Off));
    }
}
