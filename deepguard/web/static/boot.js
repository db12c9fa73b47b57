// Runs before first paint: apply the remembered language and theme so the page never flashes the wrong one.
(function () {
  "use strict";
  var root = document.documentElement;
  var lang = null, theme = null;
  try {
    lang = localStorage.getItem("dg_lang");
    theme = localStorage.getItem("dg_theme");
  } catch (e) { /* storage disabled: fall back to the browser's preferences */ }
  if (lang !== "ar" && lang !== "en") {
    lang = /^ar\b/i.test(navigator.language || "") ? "ar" : "en";
  }
  if (theme !== "dark" && theme !== "light") {
    theme = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  root.lang = lang;
  root.dir = lang === "ar" ? "rtl" : "ltr";
  root.dataset.theme = theme;
  // Never leave the page invisible if the app script fails to start.
  setTimeout(function () { root.classList.remove("booting"); }, 3000);
})();
