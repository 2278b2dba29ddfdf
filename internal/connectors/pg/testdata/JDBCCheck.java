// JDBCCheck connects through the broker with the PostgreSQL JDBC driver
// (no password), runs prepared statements, a batch, a transaction, reads
// the session's startup settings and cancels a running query. It prints
// "ok" and exits 0 when everything behaved like a direct connection.
import java.sql.*;
import java.util.Properties;

public class JDBCCheck {
    static void check(boolean cond, String what) {
        if (!cond) {
            System.out.println("FAIL: " + what);
            System.exit(1);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        Properties p = new Properties();
        p.setProperty("user", "whoever");
        p.setProperty("ApplicationName", "jdbc-check");
        p.setProperty("sslmode", args.length > 1 ? args[1] : "prefer");
        try (Connection c = DriverManager.getConnection(url, p)) {
            try (Statement st = c.createStatement();
                 ResultSet rs = st.executeQuery("select current_user, current_setting('application_name'), current_setting('extra_float_digits')")) {
                check(rs.next(), "a row");
                System.out.println("user=" + rs.getString(1));
                check(rs.getString(2).equals("jdbc-check"), "application_name " + rs.getString(2));
                check(rs.getString(3).equals("3"), "extra_float_digits " + rs.getString(3));
            }
            // Server-side prepared statements kick in after prepareThreshold uses.
            try (PreparedStatement ps = c.prepareStatement("select ?::int * 2, repeat('x', ?)")) {
                for (int i = 0; i < 10; i++) {
                    ps.setInt(1, i);
                    ps.setInt(2, 1000 * i);
                    try (ResultSet rs = ps.executeQuery()) {
                        check(rs.next(), "prepared row");
                        check(rs.getInt(1) == i * 2, "prepared value");
                        check(rs.getString(2).length() == 1000 * i, "prepared text");
                    }
                }
            }
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.execute("create temp table jt(a int, b text)");
            }
            try (PreparedStatement ps = c.prepareStatement("insert into jt values (?, ?)")) {
                for (int i = 0; i < 500; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "row " + i);
                    ps.addBatch();
                }
                int[] n = ps.executeBatch();
                check(n.length == 500, "batch size");
            }
            c.rollback();
            c.setAutoCommit(true);
            try (Statement st = c.createStatement();
                 ResultSet rs = st.executeQuery("select count(*) from pg_tables where tablename = 'jt'")) {
                check(rs.next() && rs.getInt(1) == 0, "rolled back");
            }
            // Cancel: Statement.cancel sends a CancelRequest on a new connection.
            try (Statement st = c.createStatement()) {
                Thread t = new Thread(() -> {
                    try { Thread.sleep(300); st.cancel(); } catch (Exception e) { }
                });
                t.start();
                long start = System.nanoTime();
                try {
                    st.execute("select pg_sleep(20)");
                    check(false, "pg_sleep was not cancelled");
                } catch (SQLException e) {
                    check("57014".equals(e.getSQLState()), "cancel SQLSTATE " + e.getSQLState());
                }
                long ms = (System.nanoTime() - start) / 1000000;
                check(ms < 3000, "cancel took " + ms + " ms");
                t.join();
            }
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("select 'alive'")) {
                check(rs.next() && rs.getString(1).equals("alive"), "after cancel");
            }
        }
        System.out.println("ok");
    }
}
