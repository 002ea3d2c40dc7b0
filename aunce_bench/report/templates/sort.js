// Sort a leaderboard's measured rows by the clicked column; chance and reported rows stay in their own body.
document.querySelectorAll("table.sortable").forEach(function (table) {
  var body = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  headers.forEach(function (th, column) {
    var button = th.querySelector("button");
    if (!button) return;
    button.addEventListener("click", function () {
      var numeric = th.dataset.type === "num";
      var state = th.getAttribute("aria-sort");
      var descending = state === "ascending" || (state !== "descending" && numeric);
      var rows = Array.prototype.slice.call(body.rows);
      rows.forEach(function (row, i) { row.dataset.order = row.dataset.order || String(i); });
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.v, y = b.cells[column].dataset.v;
        if (x === "" || y === "") return (x === "") - (y === "") || a.dataset.order - b.dataset.order;
        var order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
        return (descending ? -order : order) || a.dataset.order - b.dataset.order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
      headers.forEach(function (other) { other.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    });
  });
});

// Show one method family of a leaderboard (radio buttons above it), or all; chance and reported rows stay.
document.querySelectorAll("p.family-filter").forEach(function (filter) {
  var table = filter.nextElementSibling.querySelector("table");
  filter.addEventListener("change", function (event) {
    var family = event.target.value;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      row.hidden = family !== "" && row.dataset.family !== family;
    });
  });
});

// Following a link to something inside collapsed <details> (a run's curves, from its provenance row) opens
// them and scrolls to it.
function revealTarget() {
  var target = location.hash.length > 1 && document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (!target) return;
  for (var node = target.parentElement; node; node = node.parentElement) {
    if (node.tagName === "DETAILS") node.open = true;
  }
  target.scrollIntoView();
}
window.addEventListener("hashchange", revealTarget);
revealTarget();
