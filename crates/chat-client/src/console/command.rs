//! What the user types: a slash command or a message to the current room.

/// One line of input, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/join ROOM`
    Join(String),
    /// `/leave [ROOM]` (default: the current room)
    Leave(Option<String>),
    /// `/switch ROOM`
    Switch(String),
    /// `/who [ROOM]`
    Who(Option<String>),
    /// `/rooms`
    Rooms,
    /// `/history [N]`: the current room's last N stored messages.
    History(Option<u32>),
    /// `/edit [#SEQ] TEXT`: a new text for message SEQ of the current room
    /// (default: this user's last message there).
    Edit(Option<u64>, String),
    /// `/delete [#SEQ]`: takes back message SEQ of the current room
    /// (default: this user's last message there).
    Delete(Option<u64>),
    /// `/react [#SEQ] EMOJI` (add) or `/unreact [#SEQ] EMOJI` (take
    /// back): a reaction to message SEQ of the current room (default: the
    /// room's latest message).
    React(Option<u64>, String, bool),
    /// `/dm USER_ID`: opens the direct conversation with that user and
    /// makes it the current room.
    Direct(String),
    /// `/read`: marks the current room read up to its last message (the
    /// full-screen UI does it by itself for the room shown).
    Read,
    /// `/help`
    Help,
    /// `/quit`
    Quit,
    /// Any line not starting with `/` (a leading `//` sends a literal `/`).
    Say(String),
    /// Nothing to do (an empty line).
    Nothing,
    /// A malformed command, with what is wrong.
    Invalid(String),
}

/// The help text shown by `/help`.
pub const HELP: &str = "commands: /join ROOM, /leave [ROOM], /switch ROOM, /who [ROOM], /rooms, /history [N], \
/edit [#SEQ] TEXT, /delete [#SEQ] (default: your last message), /react [#SEQ] EMOJI, /unreact [#SEQ] EMOJI \
(default: the latest message), /dm USER_ID, /read, /help, /quit; \
anything else is sent to the current room (start with // to send a leading /)";

/// Parses one input line.
pub fn parse(line: &str) -> Command {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Command::Nothing;
    }
    if let Some(rest) = line.strip_prefix("//") {
        return Command::Say(format!("/{rest}"));
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Command::Say(line.to_string());
    };
    let mut words = rest.split_whitespace();
    let name = words.next().unwrap_or("");
    if name == "react" || name == "unreact" {
        let args: Vec<&str> = words.collect();
        let (sequence, emoji) = match args.as_slice() {
            [emoji] => (None, *emoji),
            [number, emoji] => match number.strip_prefix('#').map(parse_sequence) {
                Some(Ok(sequence)) => (Some(sequence), *emoji),
                Some(Err(e)) => return e,
                None => return Command::Invalid(format!("/{name} takes [#SEQ] EMOJI")),
            },
            _ => return Command::Invalid(format!("/{name} takes [#SEQ] EMOJI")),
        };
        return Command::React(sequence, emoji.to_string(), name == "react");
    }
    if name == "edit" {
        let text = rest.trim_start()["edit".len()..].trim_start();
        let (sequence, text) = match text.strip_prefix('#') {
            Some(numbered) => {
                let (number, text) = numbered
                    .split_once(char::is_whitespace)
                    .unwrap_or((numbered, ""));
                match parse_sequence(number) {
                    Ok(sequence) => (Some(sequence), text.trim_start()),
                    Err(e) => return e,
                }
            }
            None => (None, text),
        };
        if text.is_empty() {
            return Command::Invalid("/edit needs the new text: /edit [#SEQ] TEXT".into());
        }
        return Command::Edit(sequence, text.to_string());
    }
    let arg = words.next().map(str::to_string);
    if words.next().is_some() {
        return Command::Invalid(format!("/{name} takes at most one argument"));
    }
    match (name, arg) {
        ("join" | "j", Some(room)) => Command::Join(room),
        ("leave" | "part", room) => Command::Leave(room),
        ("switch" | "s", Some(room)) => Command::Switch(room),
        ("who", room) => Command::Who(room),
        ("rooms", None) => Command::Rooms,
        ("history", None) => Command::History(None),
        ("history", Some(n)) => match n.parse::<u32>() {
            Ok(n) if n > 0 => Command::History(Some(n)),
            _ => Command::Invalid(format!("/history takes a positive count, not {n:?}")),
        },
        ("read", None) => Command::Read,
        ("dm", Some(user)) => Command::Direct(user),
        ("dm", None) => Command::Invalid("/dm needs a user id".into()),
        ("delete" | "del", None) => Command::Delete(None),
        ("delete" | "del", Some(n)) => match n.strip_prefix('#').map(parse_sequence) {
            Some(Ok(sequence)) => Command::Delete(Some(sequence)),
            Some(Err(e)) => e,
            None => Command::Invalid(format!("/delete takes #SEQ, not {n:?}")),
        },
        ("help" | "h" | "?", None) => Command::Help,
        ("quit" | "q" | "exit", None) => Command::Quit,
        ("join" | "j" | "switch" | "s", None) => Command::Invalid(format!("/{name} needs a room")),
        _ => Command::Invalid(format!("unknown command /{name}; try /help")),
    }
}

/// A message's sequence number as typed after `#`.
fn parse_sequence(number: &str) -> Result<u64, Command> {
    match number.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Command::Invalid(format!(
            "#{number} is not a message number (see them in /history)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_and_messages() {
        assert_eq!(parse("/join lobby"), Command::Join("lobby".into()));
        assert_eq!(parse("/leave"), Command::Leave(None));
        assert_eq!(parse("/leave dev"), Command::Leave(Some("dev".into())));
        assert_eq!(parse("/switch dev"), Command::Switch("dev".into()));
        assert_eq!(parse("/who"), Command::Who(None));
        assert_eq!(parse("/rooms"), Command::Rooms);
        assert_eq!(parse("/history"), Command::History(None));
        assert_eq!(parse("/history 5"), Command::History(Some(5)));
        assert!(matches!(parse("/history -1"), Command::Invalid(_)));
        assert_eq!(parse("/help"), Command::Help);
        assert_eq!(parse("/quit\n"), Command::Quit);
        assert_eq!(parse("hello there"), Command::Say("hello there".into()));
        assert_eq!(
            parse("//not a command"),
            Command::Say("/not a command".into())
        );
        assert_eq!(parse("   "), Command::Nothing);
        assert!(matches!(parse("/join"), Command::Invalid(_)));
        assert!(matches!(parse("/frobnicate"), Command::Invalid(_)));
        assert!(matches!(parse("/join a b"), Command::Invalid(_)));
        assert_eq!(
            parse("/edit fixed  text"),
            Command::Edit(None, "fixed  text".into())
        );
        assert_eq!(
            parse("/edit #12 #1 again"),
            Command::Edit(Some(12), "#1 again".into())
        );
        assert!(matches!(parse("/edit #12"), Command::Invalid(_)));
        assert!(matches!(parse("/edit"), Command::Invalid(_)));
        assert!(matches!(parse("/edit #x text"), Command::Invalid(_)));
        assert!(matches!(parse("/edit #0 text"), Command::Invalid(_)));
        assert_eq!(parse("/react 👍"), Command::React(None, "👍".into(), true));
        assert_eq!(
            parse("/unreact #4 🎉"),
            Command::React(Some(4), "🎉".into(), false)
        );
        assert!(matches!(parse("/react"), Command::Invalid(_)));
        assert!(matches!(parse("/react 4 👍"), Command::Invalid(_)));
        assert!(matches!(parse("/react #4 👍 x"), Command::Invalid(_)));
        assert_eq!(parse("/dm bob"), Command::Direct("bob".into()));
        assert!(matches!(parse("/dm"), Command::Invalid(_)));
        assert_eq!(parse("/delete"), Command::Delete(None));
        assert_eq!(parse("/del #7"), Command::Delete(Some(7)));
        assert!(matches!(parse("/delete 7"), Command::Invalid(_)));
    }
}
