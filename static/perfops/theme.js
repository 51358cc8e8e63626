// Apply the saved light / dark choice before the page paints (no flash of the wrong theme).
(function () {
  "use strict";
  try {
    var saved = window.localStorage.getItem("perfops-theme");
    if (saved === "light" || saved === "dark") document.documentElement.setAttribute("data-theme", saved);
  } catch (e) { /* storage may be disabled: follow the system setting */ }
})();
