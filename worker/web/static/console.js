// Progressive enhancement: refresh <main data-refresh="N"> every N seconds without a
// full reload. Without JavaScript the pages work the same, just not live.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.refresh || !window.fetch || !window.DOMParser) return;
  var seconds = Math.max(1, parseInt(live.dataset.refresh, 10) || 5);
  function refresh() {
    if (document.hidden || live.contains(document.activeElement) &&
        document.activeElement.tagName !== "BODY" && document.activeElement.tagName !== "A" &&
        document.activeElement.tagName !== "BUTTON") {
      return;  // an operator typing into a filter keeps what they typed
    }
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Refresh": "1" } })
      .then(function (response) {
        if (response.redirected || !response.ok) return null;
        return response.text();
      })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (fresh) live.innerHTML = fresh.innerHTML;
      })
      .catch(function () {});
  }
  window.setInterval(refresh, seconds * 1000);
}());
