// chatling's OBS overlay: the bot's posts pushed by server-sent events, newest at the
// bottom, each fading after data-fade-s seconds. Text goes in with textContent only
// (emote names stay words; nothing a viewer wrote can become markup).
"use strict";
(() => {
  const body = document.body;
  const fadeMs = Number(body.dataset.fadeS) * 1000;
  const maxLines = Number(body.dataset.maxLines);
  const bot = body.dataset.bot;
  const feed = document.getElementById("feed");
  let speech = null;

  function fade(line) {
    line.classList.add("fading");
    const gone = () => line.remove();
    line.addEventListener("transitionend", gone, { once: true });
    setTimeout(gone, 3000); // a CSS without a transition: remove anyway
  }

  function add(kind, who, text, data) {
    const line = document.createElement("div");
    line.className = `line ${kind}`;
    if (data.id !== undefined) line.dataset.id = String(data.id);
    if (who) {
      const name = document.createElement("span");
      name.className = "who";
      name.textContent = who;
      line.append(name);
    }
    const words = document.createElement("span");
    words.className = "text";
    words.textContent = text;
    line.append(words);
    feed.append(line);
    while (feed.children.length > maxLines) feed.firstElementChild.remove();
    setTimeout(() => fade(line), fadeMs);
    return line;
  }

  function connect() {
    const source = new EventSource("/api/events?topics=overlay");
    source.addEventListener("open", () => { body.dataset.connected = "yes"; });
    source.addEventListener("say", (event) => {
      const data = JSON.parse(event.data);
      add("reply", bot, data.to ? `@${data.to} ${data.text}` : data.text, data);
    });
    source.addEventListener("speech", (event) => {
      const data = JSON.parse(event.data);
      if (speech) speech.remove();
      speech = add("speech", "", data.text, data);
    });
    source.addEventListener("error", () => {
      body.dataset.connected = "no";
      // The browser retries by itself unless the server answered with an error
      // (a restart with a new token, a proxy): then start over after a pause.
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
    });
  }
  connect();
})();
