// The page as a whole: the sign-in form and the chat screen, one shown at
// a time. Signing in starts a client of the library (`connect`) on the
// server that served the page, with a name or a token; the first session
// shows the chat, a refusal (close code 4401) comes back to the form with
// the server's reason and what it means. A reload signs in again with
// what this tab used last; signing out forgets it.

import { connect, type ChatClient } from "@chat/client";
import { Chat } from "./chat.js";
import { forget, lastName, parseRooms, restore, save, serverUrl, type SignIn } from "./credentials.js";
import { byId } from "./dom.js";

/** What a 4401 refusal's reason means for the person signing in. */
const REFUSALS: Record<string, string> = {
  missing: "this server requires a token: paste yours in the Token field",
  name: "this server takes a display name, not a token: 1 to 64 characters, no control characters",
  expired: "the token has expired: get a new one",
  not_yet_valid: "the token is not valid yet (are the clocks right?)",
  malformed: "that is not a token",
  key: "the server does not know the token's key (yet)",
};

/** The sign-in form and the chat screen. */
export class App {
  /** The sign-in screen. */
  private readonly signinScreen = byId("signin", HTMLElement);
  /** The chat screen. */
  private readonly chatScreen = byId("chat", HTMLElement);
  /** The sign-in form's fields and status line. */
  private readonly form = {
    form: byId("signin-form", HTMLFormElement),
    name: byId("signin-name", HTMLInputElement),
    token: byId("signin-token", HTMLInputElement),
    rooms: byId("signin-rooms", HTMLInputElement),
    submit: byId("signin-submit", HTMLButtonElement),
    status: byId("signin-status", HTMLElement),
  };
  /** The running client and its chat screen, while signed in (or signing in). */
  private session: { client: ChatClient; chat: Chat; signIn: SignIn } | undefined;

  /** Signs in again with this tab's last sign-in, or shows the form. */
  start(): void {
    this.form.form.addEventListener("submit", (event) => this.onSubmit(event));
    byId("signout", HTMLButtonElement).addEventListener("click", () => this.signOut());
    const saved = restore();
    if (saved !== undefined) {
      this.fillForm(saved);
      this.begin(saved, true);
    } else {
      this.form.name.value = lastName();
      this.showForm();
    }
  }

  private onSubmit(event: SubmitEvent): void {
    event.preventDefault();
    const name = this.form.name.value.trim();
    const token = this.form.token.value.trim();
    if (name === "" && token === "") {
      this.say("Enter a name (or a token, on a server with authentication).", true);
      this.form.name.focus();
      return;
    }
    const rooms = parseRooms(this.form.rooms.value);
    this.begin({ name, token, rooms: rooms.length > 0 ? rooms : ["lobby"], current: undefined }, false);
  }

  /**
   * Starts a client with `signIn`. A restored sign-in shows the chat at
   * once (as it was before the reload); a new one waits on the form for the
   * first session.
   */
  private begin(signIn: SignIn, restored: boolean): void {
    this.stop();
    const client = connect({
      url: serverUrl(location),
      ...(signIn.token !== "" ? { token: signIn.token } : { name: signIn.name }),
      rooms: signIn.rooms,
      // The page joins direct conversations itself, to show them.
      joinDirect: false,
    });
    const chat = new Chat(
      client,
      {
        connected: (_welcome, first) => {
          if (first) this.showChat(signIn);
        },
        unreachable: (reason) => {
          if (restored) return;
          this.say(`Cannot reach the server yet (${reason}); still trying…`, false);
          // Signing in again (with other credentials) replaces this attempt.
          this.form.submit.disabled = false;
        },
        stopped: (reason, closeReason) => this.refused(reason, closeReason),
        changed: (rooms, current) => {
          signIn.rooms = rooms;
          signIn.current = current;
          if (this.session?.client === client && client.welcome !== undefined) save(signIn);
        },
      },
      signIn.rooms,
      signIn.current,
    );
    this.session = { client, chat, signIn };
    if (restored) this.showChat(signIn);
    else {
      this.form.submit.disabled = true;
      this.say("Connecting…", false);
    }
  }

  /**
   * The server refused the credentials, or ended the session for good (an
   * application's disconnect): back to the form, saying why.
   */
  private refused(reason: string, closeReason: string): void {
    const signIn = this.session?.signIn;
    this.stop();
    forget();
    if (signIn !== undefined) this.fillForm(signIn);
    this.showForm();
    if (closeReason === "disconnected") {
      this.say(`Disconnected by the server: ${reason}. Sign in again to continue.`, true);
      return;
    }
    const meaning = REFUSALS[closeReason] ?? "the token was refused";
    this.say(`Sign-in refused (${closeReason || reason}): ${meaning}.`, true);
  }

  private signOut(): void {
    this.stop();
    forget();
    this.form.token.value = "";
    this.showForm();
    this.say("Signed out.", false);
  }

  /** Closes the client and clears the chat screen. */
  private stop(): void {
    if (this.session === undefined) return;
    this.session.chat.dispose();
    void this.session.client.close();
    this.session = undefined;
  }

  private showChat(signIn: SignIn): void {
    save(signIn);
    this.form.submit.disabled = false;
    this.say("", false);
    this.form.token.value = "";
    this.signinScreen.hidden = true;
    this.chatScreen.hidden = false;
    byId("composer-text", HTMLTextAreaElement).focus();
  }

  private showForm(): void {
    this.chatScreen.hidden = true;
    this.signinScreen.hidden = false;
    this.form.submit.disabled = false;
    (this.form.name.value === "" ? this.form.name : this.form.submit).focus();
  }

  private fillForm(signIn: SignIn): void {
    this.form.name.value = signIn.name;
    this.form.rooms.value = signIn.rooms.join(" ");
  }

  /** Shows `text` under the form (as an error, or as progress). */
  private say(text: string, error: boolean): void {
    this.form.status.textContent = text;
    this.form.status.dataset.kind = error ? "error" : "info";
  }
}
