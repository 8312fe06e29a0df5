// Keyboard navigation of the review queue: j / ArrowDown next item, k / ArrowUp previous, Enter opens the
// focused item (a plain link, so it also works without this script). Keys typed into a form field are left alone.
(function () {
  "use strict";
  function links() { return Array.prototype.slice.call(document.querySelectorAll("table.queue a.item-link")); }
  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    var target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA")) return;
    var step = { j: 1, ArrowDown: 1, k: -1, ArrowUp: -1 }[event.key];
    if (!step) return;
    var all = links();
    if (!all.length) return;
    var at = all.indexOf(document.activeElement);
    var next = at < 0 ? (step > 0 ? 0 : all.length - 1) : Math.min(all.length - 1, Math.max(0, at + step));
    all[next].focus();
    all[next].closest("tr").scrollIntoView({ block: "nearest" });
    event.preventDefault();
  });
})();
